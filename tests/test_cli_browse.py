"""The CLI's browsing commands end to end (issue #16): ``search --like / --offset /
--diversity``, ``facets``, and unknown filter fields as one-line errors, on a real catalog
folder (CSV + JPEG files) ingested into the embedded store with the fake encoder."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from fake_encoder import register_fake
from PIL import Image
from typer.testing import CliRunner

from clipy_qdrant.browse import ProductImage
from clipy_qdrant.search import Searcher
from clipy_qdrant.store import open_store
from ingest.cli import app

COLOURS = {"Red": (220, 20, 20), "Blue": (20, 40, 220), "Black": (5, 5, 5)}
TYPES = ["Tshirts", "Shoes", "Watches"]


@pytest.fixture(scope="module", autouse=True)
def _fake() -> None:
    register_fake()


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("catalog")
    (root / "images").mkdir()
    out = []
    pid = 500
    for colour, rgb in COLOURS.items():
        for article in TYPES:
            for gender in ("Men", "Women"):
                pid += 1
                img = Image.new("RGB", (300, 400), (255, 255, 255))
                img.paste(Image.new("RGB", (200, 300), rgb), (50, 50))
                img.save(root / "images" / f"{pid}.jpg", "JPEG")
                out.append(
                    {
                        "id": pid,
                        "gender": gender,
                        "articleType": article,
                        "baseColour": colour,
                        "year": 2010 + pid % 3,
                        "productDisplayName": f"{gender} {colour} {article}",
                        "image": f"{pid}.jpg",
                    }
                )
    with (root / "styles.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    return root, out


@pytest.fixture(scope="module")
def store(rows, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = rows
    path = tmp_path_factory.mktemp("store") / "data"
    code, _, err = run(
        "ingest", str(root / "styles.csv"), "--images", str(root / "images"),
        "--store", str(path), "--encoder", "fake",
    )  # fmt: skip
    assert code == 0, err
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_search_like_excludes_the_product_and_takes_filters(store: Path) -> None:
    code, out, err = run("search", "--like", "501", "--store", str(store), "--json", "-k", "5")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 5 and "501" not in {h["product_id"] for h in hits}
    assert hits[0]["payload"]["baseColour"] == "Red"  # the product is red
    code, out, err = run(
        "search", "blue", "--like", "501", "-f", "gender=Women", "--store", str(store), "--json"
    )
    assert code == 0, err
    hits = json.loads(out)
    assert hits and all(h["payload"]["gender"] == "Women" for h in hits)
    code, _, err = run("search", "--like", "42", "--store", str(store))
    assert code == 1 and err.startswith("clipy: error: product '42' is not in store")
    assert err.count("\n") == 1


def test_search_offset_and_diversity(store: Path) -> None:
    base = ["search", "red shoes", "--store", str(store), "--json"]
    code, out, _ = run(*base, "-k", "6")
    six = [h["product_id"] for h in json.loads(out)]
    code, out, _ = run(*base, "-k", "3", "--offset", "3")
    assert code == 0 and [h["product_id"] for h in json.loads(out)] == six[3:]
    code, out, _ = run(*base, "-k", "6", "--diversity", "0.6")
    spread = [h["product_id"] for h in json.loads(out)]
    assert code == 0 and sorted(spread) != sorted(six)
    assert run(*base, "--diversity", "2")[0] == 2


def test_facets_json_and_text(store: Path, rows) -> None:
    _, products = rows
    code, out, err = run("facets", "--store", str(store), "--json", "-f", "gender=Men")
    assert code == 0, err
    facets = json.loads(out)
    assert {"gender", "articleType", "baseColour", "year"} <= set(facets)
    assert "split" not in facets and "product_id" not in facets  # not shopper fields
    men = [p for p in products if p["gender"] == "Men"]
    want = Counter(p["baseColour"] for p in men)
    assert {f["value"]: f["count"] for f in facets["baseColour"]} == want
    assert facets["gender"] == [{"value": "Men", "count": len(men)}]
    code, out, _ = run("facets", "split", "--store", str(store), "--json")
    assert code == 0 and sum(f["count"] for f in json.loads(out)["split"]) == len(products)
    code, out, _ = run("facets", "year", "--store", str(store))
    assert code == 0 and out.splitlines()[0] == "year:"
    assert len(out.splitlines()) == 1 + len({p["year"] for p in products})


def test_unknown_fields_are_one_line_errors(store: Path) -> None:
    for args in (
        ["search", "red shoes", "-f", "colour=Red"],
        ["facets", "-f", "colour=Red"],
        ["facets", "colour"],
    ):
        code, out, err = run(*args, "--store", str(store))
        assert code == 1 and out == ""
        assert err.count("\n") == 1 and "'colour' is not indexed" in err
        assert "indexed fields: articleType, baseColour" in err


def test_ingest_writes_thumbnails_once(store: Path, rows) -> None:
    root, _ = rows
    vector_store = open_store(store)
    try:
        image = Searcher(vector_store).product_image("505")
    finally:
        vector_store.close()
    assert isinstance(image, ProductImage) and image.media_type == "image/jpeg"
    assert max(Image.open(io.BytesIO(image.data)).size) == 256
    before = (store / "thumbnails.sqlite").stat().st_mtime_ns
    code, _, err = run(
        "ingest", str(root / "styles.csv"), "--images", str(root / "images"), "--store", str(store)
    )
    assert code == 0, err
    assert (store / "thumbnails.sqlite").stat().st_mtime_ns == before  # nothing rewritten
