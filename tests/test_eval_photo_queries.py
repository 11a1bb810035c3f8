"""Shopper-photo query sets: perturbed held-out images written as JPEGs, read back and run
through the real runner over a real edge store, with the report's photo table."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from fake_encoder import FakeEncoder
from PIL import Image, ImageDraw

from clipy_qdrant.errors import InputError
from clipy_qdrant.eval.perturb import PERTURBATIONS
from clipy_qdrant.eval.photo_queries import choose_photo_products, photo_queries, photo_set
from clipy_qdrant.eval.queries import read_queries, write_queries
from clipy_qdrant.eval.report import format_run, photo_rows, run_to_json
from clipy_qdrant.eval.runner import make_query_files, run_eval
from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.search import Searcher
from clipy_qdrant.store import PointRecord, VectorStore, open_store

#: Twenty products, ids 100..119; held out (id % 5 == 0): 100, 105, 110, 115.
IDS = [str(100 + i) for i in range(20)]
HELDOUT = {"100", "105", "110", "115"}


def colour_of(i: int) -> tuple[int, int, int]:
    """Far-apart saturated colours, one per product."""
    hue = (i * 7 % 20) / 20
    r, g, b = (int(255 * v) for v in _hsv(hue))
    return r, g, b


def _hsv(h: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, 0.9, 0.8)


def image_of(i: int) -> Image.Image:
    img = Image.new("RGB", (60, 80), (255, 255, 255))
    ImageDraw.Draw(img).rectangle((10, 10, 49, 69), fill=colour_of(i))
    return img


def payloads() -> list[dict[str, str]]:
    return [
        {
            "product_id": pid,
            "articleType": "Shirts" if i % 2 == 0 else "Shoes",
            "baseColour": "Red" if i % 4 < 2 else "Blue",
            "name": f"p{pid}",
        }
        for i, pid in enumerate(IDS)
    ]


def load_images(ids: Collection[str]) -> dict[str, Image.Image]:
    return {pid: image_of(IDS.index(pid)) for pid in ids}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VectorStore]:
    encoder = FakeEncoder()
    st = open_store(tmp_path / "store")
    st.ensure_collection(encoder.info, {"articleType": "keyword", "baseColour": "keyword"})
    images = encoder.encode_images([image_of(i) for i in range(len(IDS))])
    texts = encoder.encode_texts([p["name"] for p in payloads()])
    st.upsert(
        [
            PointRecord(
                p["product_id"],
                {"image": images[i], "text": texts[i]},
                {k: v for k, v in p.items() if k != "product_id"},
            )
            for i, p in enumerate(payloads())
        ]
    )
    yield st
    st.close()


def test_products_are_held_out_and_the_sample_is_seeded() -> None:
    chosen = choose_photo_products(payloads(), n=3, seed=1)
    assert len(chosen) == 3 and {p["product_id"] for p in chosen} <= HELDOUT
    assert chosen == choose_photo_products(payloads(), n=3, seed=1)
    fold1 = choose_photo_products(payloads(), n=10, heldout=lambda pid: int(pid) % 5 == 1)
    assert {p["product_id"] for p in fold1} == {"101", "106", "111", "116"}


def test_perturbed_images_are_real_jpegs_beside_the_query_file(tmp_path: Path) -> None:
    queries = photo_queries(payloads(), load_images, tmp_path, n=4, seed=0)
    sets = {q.set for q in queries}
    assert sets == {
        photo_set(p, f) for p in PERTURBATIONS for f in ("known-item", "articleType")
    } | {photo_set(p, "articleType+colour") for p in PERTURBATIONS}
    for q in queries:
        assert q.gallery == "all" and q.image is not None
        path = tmp_path / q.image
        with Image.open(path) as img:
            assert img.format == "JPEG"
        pid = Path(q.image).stem
        assert pid in HELDOUT
        if q.set.endswith("known-item"):
            assert q.relevant_ids == (pid,) and not q.exclude
        else:
            assert q.exclude == (pid,) and q.relevant_rule is not None
    # Read back: relative image paths resolve against the query file's folder.
    back = read_queries(write_queries(queries, tmp_path / "photo.jsonl"))
    assert all(Path(q.image or "").is_file() for q in back)


def test_same_seed_same_files(tmp_path: Path) -> None:
    photo_queries(payloads(), load_images, tmp_path / "a", n=4, seed=5)
    photo_queries(payloads(), load_images, tmp_path / "b", n=4, seed=5)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.jpg"))
    assert files_a == files_b and len(files_a) == 4 * len(PERTURBATIONS)
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    photo_queries(payloads(), load_images, tmp_path / "c", n=4, seed=6)
    crop = Path("crop")
    assert any(
        (tmp_path / "a" / crop / f.name).read_bytes() != f.read_bytes()
        for f in (tmp_path / "c" / crop).iterdir()
    )


def test_products_without_an_image_are_left_out_and_none_is_an_error(tmp_path: Path) -> None:
    def some(ids: Collection[str]) -> dict[str, Image.Image]:
        return {pid: image_of(IDS.index(pid)) for pid in ids if pid != "100"}

    queries = photo_queries(payloads(), some, tmp_path, n=4, perturbations=("clean",))
    assert {Path(q.image or "").stem for q in queries} == HELDOUT - {"100"}
    with pytest.raises(InputError, match="none of the chosen"):
        photo_queries(payloads(), lambda ids: {}, tmp_path, n=4)
    with pytest.raises(InputError, match="unknown perturbation"):
        photo_queries(payloads(), load_images, tmp_path, n=4, perturbations=("sepia",))


def test_run_reports_known_item_hits_and_type_precision(store: VectorStore, tmp_path: Path) -> None:
    paths = make_query_files(store, tmp_path / "q", seed=0, load_images=load_images)
    assert paths["photo"] == tmp_path / "q" / "photo" / "photo.jsonl"
    assert "photo" not in {p.stem for p in (tmp_path / "q").glob("*.jsonl")}
    queries = read_queries(paths["photo"])
    image_only = FusionConfig.from_weights(w_image=1.0)
    run = run_eval(
        Searcher(store, FakeEncoder()),
        queries,
        [FusionConfig(), image_only],
        ks=(1, 10),
        show_progress=False,
    )
    rows = {r["perturbation"]: r for r in photo_rows(run)}
    assert list(rows) == list(PERTURBATIONS)
    clean = rows["clean"]
    assert clean["images"] == 4 and clean["config"]["w_image"] == 0.5
    # The clean image is its own product's image: found first, every time.
    assert clean["metrics"]["hit@1"] == 1.0 and clean["metrics"]["MRR"] == 1.0
    # Of 19 other products 9 share the type: a top 10 holds at most 9 of them.
    assert 0 < clean["metrics"]["type P@10"] <= 0.9
    for row in rows.values():
        m = row["metrics"]
        assert 0 <= m["hit@1"] <= m["hit@10"] <= 1 and m["hit@1"] <= m["MRR"] <= m["hit@10"]
    # The table and the JSON carry the same rows.
    assert "Shopper photos" in format_run(run) and "type+colour P@10" in format_run(run)
    assert run_to_json(run)["photo"] == photo_rows(run)
    # Image vector alone (the second setting) finds the clean images too.
    assert run.sets[photo_set("clean", "known-item")].mean_scores(1)["hit_rate@1"] == 1.0
