"""The CLI end to end on a real catalog folder (CSV + JPEG/PNG files), the embedded store and
the fake encoder: ingest, info, search (single, filtered, image, batch), and error handling."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fake_encoder import register_fake
from PIL import Image
from typer.testing import CliRunner

from clipy_qdrant.fusion import DEFAULT_W_LEXICAL
from ingest.cli import app

COLOURS = {"Red": (220, 20, 20), "Blue": (20, 40, 220), "Green": (20, 160, 40), "Black": (5, 5, 5)}
TYPES = ["Tshirts", "Shoes", "Watches"]


@pytest.fixture(scope="module", autouse=True)
def _fake() -> None:
    register_fake()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    (root / "images").mkdir()
    rows = []
    pid = 100
    for colour, rgb in COLOURS.items():
        for article in TYPES:
            for gender, year in (("Men", 2012), ("Women", 2016)):
                pid += 1
                img = Image.new("RGB", (30, 40), (255, 255, 255))
                img.paste(Image.new("RGB", (20, 30), rgb), (5, 5))
                fmt = "PNG" if pid % 2 else "JPEG"
                name = f"{pid}.{'png' if fmt == 'PNG' else 'jpg'}"
                img.save(root / "images" / name, fmt)
                rows.append(
                    {
                        "id": pid,
                        "gender": gender,
                        "articleType": article,
                        "baseColour": colour,
                        "year": year,
                        "productDisplayName": f"{gender} {colour} {article}",
                        "image": name,
                    }
                )
    with (root / "styles.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def store(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "data"
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(catalog / "styles.csv"),
            "--images",
            str(catalog / "images"),
            "--store",
            str(path),
            "--encoder",
            "fake",
            "--report",
            str(path.parent / "report.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # everything but results goes to stderr
    assert "24" in result.stderr and "stored" in result.stderr
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_shows_the_defaults_it_names() -> None:
    """Option help keeps its "(default: ...)" notes (square brackets would be eaten as markup)."""
    code, out, _ = run("ingest", "--help")
    assert code == 0
    words = " ".join(out.replace("│", " ").split())
    assert "(env CLIPY_STORE; default: ./clipy-data)" in words
    assert "(default: images/ beside it)" in words
    assert "(default: detected, the name then the descriptive attributes; see --dry-run)" in words
    assert "(default: {id}.jpg when the catalog has no image column)" in words


def test_info_text_shows_each_indexed_field_with_its_type(store: Path) -> None:
    code, out, _ = run("info", "--store", str(store))
    assert code == 0
    fields_line = next(line for line in out.splitlines() if line.startswith("indexed fields:"))
    assert "year (integer)" in fields_line and "baseColour (keyword)" in fields_line
    assert "hubness (float)" in fields_line  # the low-hubness list filters on it
    hubness_line = next(line for line in out.splitlines() if line.startswith("hubness:"))
    assert "low-hubness band below" in hubness_line
    assert "fused vector:   yes: weighted fusion" in out


def test_info_reports_store(store: Path) -> None:
    code, out, _ = run("info", "--store", str(store), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["products"] == 24
    assert info["encoder"] == {"name": "fake", "dim": 32}
    assert info["indexed_fields"]["year"] == "integer"
    assert info["indexed_fields"]["baseColour"] == "keyword"
    assert info["hubness"]["points"] == 24 and info["hubness"]["top"] == 10
    assert info["hubness"]["minimum"] <= info["hubness"]["low"]
    assert info["fused_vector"] is True


def test_search_json_with_filters(store: Path) -> None:
    code, out, _ = run(
        "search", "red", "--store", str(store), "--json", "-k", "3",
        "--filter", "gender=Men", "--filter", "year>=2010", "--filter", "articleType!=Watches",
    )  # fmt: skip
    assert code == 0
    hits = json.loads(out)
    assert len(hits) == 3
    for hit in hits:
        assert hit["payload"]["gender"] == "Men"
        assert hit["payload"]["articleType"] != "Watches"
        assert set(hit) == {
            "product_id", "score", "text_score", "image_score", "lexical_score", "image_penalty",
            "payload",
        }  # fmt: skip
        assert hit["image_penalty"] == 0.0  # a one-word query is not corrected
    assert hits[0]["payload"]["baseColour"] == "Red"


def test_search_hubness_correction_of_long_text_queries(store: Path) -> None:
    query = [
        "search",
        "red casual shirt for men",
        "--store",
        str(store),
        "--json",
        "--w-image",
        "1",
        "--w-lexical",
        "0",
    ]
    code, out, err = run(*query, "--hubness", "1.5")
    assert code == 0, err
    hits = json.loads(out)
    assert hits and all(h["image_penalty"] > 0 for h in hits)
    for h in hits:
        assert h["score"] == pytest.approx(h["image_score"], abs=1e-6)
    code, out, err = run(*query, "--hubness", "0")
    assert code == 0, err
    assert all(h["image_penalty"] == 0 for h in json.loads(out))
    assert run(*query, "--hubness", "-1")[0] == 2


def test_one_weight_implies_the_other(store: Path) -> None:
    """``--w-image 0.25`` alone fuses with ``w_text = 0.75`` (and the default lexical weight,
    which is outside that sum)."""
    code, out, err = run(
        "search", "red shoes", "--store", str(store), "--json", "--w-image", "0.25"
    )
    assert code == 0, err
    for hit in json.loads(out):
        expected = (
            0.75 * hit["text_score"]
            + 0.25 * hit["image_score"]
            + DEFAULT_W_LEXICAL * hit["lexical_score"]
        )
        assert hit["score"] == pytest.approx(expected, abs=1e-5)


def test_search_by_image_finds_same_colour(store: Path, catalog: Path) -> None:
    code, out, _ = run(
        "search", "--image", str(catalog / "images" / "102.jpg"), "--store", str(store),
        "--json", "-k", "4", "--w-image", "1",
    )  # fmt: skip
    assert code == 0
    hits = json.loads(out)
    assert hits[0]["product_id"] == "102"
    assert all(h["payload"]["baseColour"] == "Red" for h in hits)


def test_search_table_output(store: Path) -> None:
    code, out, _ = run("search", "blue shoes", "--store", str(store), "-k", "2", "--fusion", "rrf")
    assert code == 0
    assert len(out.strip().splitlines()) == 3  # header + 2 hits


def test_batch_queries_one_line_per_query(store: Path, catalog: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                {"text": "green", "k": 2},
                {"image": str(catalog / "images" / "110.jpg"), "filters": ["gender=Women"]},
                {"text": "black watch", "filters": ["year>=2015"], "k": 1},
            ]
        )
    )
    code, out, _ = run("search", "--queries", str(queries), "--store", str(store), "--json")
    assert code == 0
    lines = out.strip().splitlines()
    assert [len(json.loads(line)) for line in lines] == [2, 10, 1]
    assert all(h["payload"]["gender"] == "Women" for h in json.loads(lines[1]))


def test_errors_are_one_line_exit_1(store: Path, tmp_path: Path) -> None:
    code, out, err = run("search", "red", "--store", str(store), "--filter", "year>=soon")
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0 and err.startswith("clipy: error: filter 'year>=soon'")

    code, _, err = run("search", "--image", str(tmp_path / "nope.jpg"), "--store", str(store))
    assert code == 1 and "nope.jpg does not exist" in err

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "red"}\n{"k": 3}\n')
    code, _, err = run("search", "--queries", str(bad), "--store", str(store))
    assert code == 1 and "line 2" in err and "'text' or 'image'" in err

    bad.write_text('{"text": "red"}\n{"text": "red", "w_image": 1.5}\n')
    code, _, err = run("search", "--queries", str(bad), "--store", str(store))
    assert code == 1 and err.strip().count("\n") == 0
    assert "line 2: w_image given alone must be within [0, 1]" in err


def test_usage_errors_exit_2(store: Path) -> None:
    assert run("search", "--store", str(store))[0] == 2
    assert run("search", "red", "-k", "0", "--store", str(store))[0] == 2


def test_ingest_with_another_encoder_is_refused(store: Path, catalog: Path, tmp_path: Path) -> None:
    code, _, err = run(
        "ingest", str(catalog / "styles.csv"), "--store", str(store), "--encoder", "fake:64",
        "--report", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert code == 1
    assert "fake-64" in err and "fake" in err
    assert json.loads(run("info", "--store", str(store), "--json")[1])["products"] == 24


def test_reingest_stores_nothing_new(store: Path, catalog: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    code, _, err = run(
        "ingest", str(catalog / "styles.csv"), "--store", str(store), "--report", str(report)
    )
    assert code == 0, err
    assert json.loads(report.read_text())["unchanged"] == 24, err
    assert json.loads(report.read_text())["stored"] == 0


def test_a_record_without_the_low_threshold_is_reported_and_refreshed_by_ingest(
    store: Path, catalog: Path, tmp_path: Path
) -> None:
    """A store whose hubness record has no low-hubness threshold (an older clipy wrote it):
    `clipy info` says so, and `clipy ingest` with nothing new records it."""
    import dataclasses
    import shutil

    from clipy_qdrant.store import open_store

    copy = tmp_path / "old"
    shutil.copytree(store, copy)
    s = open_store(copy)
    info = s.hubness_info()
    assert info is not None and info.low is not None
    s.set_hubness_info(dataclasses.replace(info, low=None))
    s.close()
    code, out, _ = run("info", "--store", str(copy))
    assert code == 0 and "no low-hubness band" in out
    report = tmp_path / "r.json"
    code, _, err = run(
        "ingest", str(catalog / "styles.csv"), "--store", str(copy), "--report", str(report)
    )
    assert code == 0, err
    assert json.loads(report.read_text())["stored"] == 0
    assert json.loads(report.read_text())["hubness_points"] == 24
    assert json.loads(run("info", "--store", str(copy), "--json")[1])["hubness"] == info.to_json()


def test_eval_make_queries_run_and_ab(store: Path, tmp_path: Path) -> None:
    queries = tmp_path / "queries"
    code, _, err = run("eval", "make-queries", "--store", str(store), "--out", str(queries))
    assert code == 0, err
    files = sorted(queries.glob("*.jsonl"))
    assert {f.stem for f in files} >= {"category", "image", "known-item"}

    out = tmp_path / "out"
    code, stdout, err = run(
        "eval", "run", *map(str, files), "--store", str(store), "--step", "0.5", "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    assert result["hubness"] == 0.0  # the fake encoder has no default strength
    assert {p.name for p in out.iterdir()} >= {
        "results.json",
        "per_query.csv",
        "metric_vs_weight.png",
        "table.txt",
    }
    with (out / "per_query.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    keys = [
        tuple(
            r[k] for k in ("set", "query_id", "method", "w_text", "w_image", "w_lexical", "rrf_k")
        )
        for r in rows
    ]
    assert len(set(keys)) == len(keys)  # each (query, setting) once: the lexical weight included
    assert {r["w_lexical"] for r in rows} == {"0", "0.5"}

    code, stdout, err = run(
        "eval", "ab", str(queries / "category.jsonl"), "--store", str(store),
        "--a", "w_image=0.5", "--b", "w_image=0.5", "--json", "--hubness", "1",
    )  # fmt: skip
    assert code == 0, err
    for report in json.loads(stdout)["sets"].values():
        primary = report["metrics"][report["primary_metric"]]
        assert (
            primary["diff"] == 0
            and primary["p_value"] == 1
            and primary["ties"] == report["n_queries"]
        )

    code, _, err = run(
        "eval",
        "ab",
        str(queries / "category.jsonl"),
        "--store",
        str(store),
        "--a",
        "w_image=2",
        "--b",
        "w_image=0",
    )
    assert code == 2 and err.startswith("clipy: error: fusion setting 'w_image=2'")


def test_eval_shopper_photo_sets_from_the_catalog_images(
    store: Path, catalog: Path, tmp_path: Path
) -> None:
    queries = tmp_path / "queries"
    code, _, err = run(
        "eval", "make-queries", "--store", str(store), "--out", str(queries),
        "--catalog", str(catalog / "styles.csv"), "--photos", "3",
    )  # fmt: skip
    assert code == 0, err
    assert "photo" in err
    jpegs = sorted((queries / "photo").rglob("*.jpg"))
    assert len(jpegs) == 3 * 10  # three held-out products, clean, 7 transforms, 2 composites
    code, stdout, err = run(
        "eval", "run", str(queries / "photo" / "photo.jsonl"), "--store", str(store), "--step", "0.5",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    rows = {r["perturbation"]: r for r in json.loads(stdout)["photo"]}
    assert rows["clean"]["images"] == 3 and rows["clean"]["metrics"]["hit@10"] == 1.0
    assert set(rows) >= {"crop", "rotate", "jpeg", "background", "reshoot", "all"}


def test_train_captions_are_product_names(catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest embeds name + attributes by default, but training pairs images with the names
    (training adds attribute phrases itself); ``--text`` still overrides."""
    import clipy_qdrant.training as train_module

    seen: list[list[str]] = []

    def fake_train(products: object, out: object, config: object, **kwargs: object) -> object:
        seen.append([p.text for p in products])  # type: ignore[attr-defined]
        return train_module.TrainReport(
            out_dir=str(out), train_products=0, heldout_products=0, epochs=0, seed=0, settings={}
        )

    monkeypatch.setattr(train_module, "train_fashion_encoder", fake_train)
    args = ["train", str(catalog / "styles.csv"), "--images", str(catalog / "images")]
    assert run(*args, "--out", "unused")[0] == 0
    assert seen[0][:2] == ["Men Red Tshirts", "Women Red Tshirts"]
    assert run(*args, "--out", "unused", "--text", "{productDisplayName} {year}")[0] == 0
    assert seen[1][:2] == ["Men Red Tshirts 2012", "Women Red Tshirts 2016"]


@pytest.mark.slow
@pytest.mark.catalog
def test_train_writes_a_model_that_ingest_can_use(tmp_path: Path) -> None:
    """``clipy train`` on a slice of the catalog writes heads that load as an encoder."""
    import pyarrow.parquet as pq

    from clipy_qdrant.config import Settings
    from clipy_qdrant.encoders import get_encoder

    source = next(Settings().catalog.rglob("*.parquet"))
    (tmp_path / "cat" / "data").mkdir(parents=True)
    pq.write_table(pq.read_table(source).slice(0, 400), tmp_path / "cat" / "data" / "part.parquet")
    model = tmp_path / "model"
    code, _, err = run("train", str(tmp_path / "cat"), "--out", str(model), "--epochs", "2")
    assert code == 0, err
    assert "held-out" in err
    encoder = get_encoder(f"fashion-mini:{model}")
    vectors = encoder.encode_texts(["red shirt"])
    assert vectors.shape == (1, encoder.info.dim)
    assert (
        encoder.info.name.startswith("fashion-mini:")
        and encoder.info.name != get_encoder("fashion-mini").info.name
    )


def test_ingest_of_an_empty_catalog_fails_and_leaves_no_store(tmp_path: Path) -> None:
    """Issue #20 item 3: a header-only CSV, or one whose every row is skipped, is an error
    (one line, exit 1) and no store folder is left behind."""
    (tmp_path / "images").mkdir()
    empty = tmp_path / "empty.csv"
    empty.write_text("id,productDisplayName\n", encoding="utf-8")
    no_ids = tmp_path / "no-ids.csv"
    no_ids.write_text("id,productDisplayName\n,Red shirt\n,Blue shirt\n", encoding="utf-8")
    for path, message in ((empty, "has no products"), (no_ids, "no usable rows: 2 skipped")):
        folder = tmp_path / f"store-{path.stem}"
        code, out, err = run(
            "ingest", str(path), "--store", str(folder), "--encoder", "fake",
            "--report", str(tmp_path / "r.json"),
        )  # fmt: skip
        assert code == 1 and out == "", err
        errors = [line for line in err.splitlines() if line.startswith("clipy: error:")]
        assert len(errors) == 1 and message in errors[0] and str(path) in errors[0]
        assert "Traceback" not in err
        assert not folder.exists()


def test_ingest_of_an_empty_catalog_leaves_an_existing_store_untouched(
    store: Path, tmp_path: Path
) -> None:
    before = json.loads(run("info", "--store", str(store), "--json")[1])
    meta = (store / "clipy.json").read_text()
    (tmp_path / "images").mkdir()
    empty = tmp_path / "empty.csv"
    empty.write_text("id,productDisplayName\n", encoding="utf-8")
    no_ids = tmp_path / "no-ids.csv"
    no_ids.write_text("id,productDisplayName\n,Red shirt\n", encoding="utf-8")
    for path in (empty, no_ids):
        code, _, err = run(
            "ingest", str(path), "--store", str(store), "--report", str(tmp_path / "r.json")
        )
        assert code == 1 and "clipy: error:" in err
    assert json.loads(run("info", "--store", str(store), "--json")[1]) == before
    assert before["products"] == 24
    assert (store / "clipy.json").read_text() == meta
