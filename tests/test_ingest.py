"""The ingest pipeline end to end: real files, the fake encoder, real stores (qdrant-edge in a
temp folder, qdrant-client in memory). Bad input, resumability, encoder mismatch, a SIGKILL."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_encoder import FakeEncoder
from PIL import Image

from clipy_qdrant.config import Settings
from clipy_qdrant.errors import EncoderError, EncoderMismatchError, InputError
from clipy_qdrant.filters import parse_filter
from clipy_qdrant.store import HUBNESS_KEY, IMAGE, TEXT, VectorStore, open_store
from ingest.pipeline import (
    BAD_ROW,
    BAD_VALUE,
    DUPLICATE_ID,
    ENCODE_FAILED,
    MISSING_IMAGE,
    NO_ID,
    NO_IMAGE,
    UNREADABLE_IMAGE,
    content_hash,
    infer_indexed_fields,
    run_ingest,
)
from ingest.readers import open_catalog
from ingest.records import Product

TESTS = Path(__file__).resolve().parent
COLOURS = [(220, 20, 20), (20, 40, 220), (20, 160, 40), (240, 220, 20), (30, 30, 30)]


def jpeg(rgb: tuple[int, int, int], size: tuple[int, int] = (24, 32), fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def write_csv(
    root: Path, rows: Sequence[dict[str, Any]], header: str = "id,gender,year,productDisplayName"
) -> Path:
    columns = header.split(",")
    lines = [header] + [",".join(str(r.get(c, "")) for c in columns) for r in rows]
    path = root / "styles.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_rows(root: Path, n: int, start: int = 1) -> list[dict[str, Any]]:
    """``n`` products with real JPEGs in ``root/images``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(start, start + n):
        rgb = COLOURS[i % len(COLOURS)]
        (root / "images" / f"{i}.jpg").write_bytes(jpeg(rgb))
        rows.append(
            {
                "id": i,
                "gender": ["Men", "Women"][i % 2],
                "year": 2010 + i % 3,
                "productDisplayName": f"Product {i} shirt",
            }
        )
    return rows


@pytest.fixture(params=["edge", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s = open_store(tmp_path / "store") if request.param == "edge" else open_store(url=":memory:")
    yield s
    s.close()


@pytest.fixture
def edge_store(tmp_path: Path) -> Iterator[VectorStore]:
    s = open_store(tmp_path / "store")
    yield s
    s.close()


def stored_ids(store: VectorStore) -> list[str]:
    return [p.product_id for p in store.scroll()]


# --------------------------------------------------------------------------- acceptance 5


def test_bad_rows_are_reported_and_the_rest_is_stored(store: VectorStore, tmp_path: Path) -> None:
    """Corrupt JPEG, truncated JPEG, missing file, row without id, duplicate id: reported with
    line and file; everything else stored."""
    rows = good_rows(tmp_path, 3)  # ids 1, 2, 3 (lines 2-4)
    images = tmp_path / "images"
    rows += [
        {"id": 10, "gender": "Men", "year": 2011, "productDisplayName": "Corrupt jpeg"},  # line 5
        {"id": "", "gender": "Men", "year": 2011, "productDisplayName": "No id"},  # line 6
        {
            "id": 11,
            "gender": "Women",
            "year": 2012,
            "productDisplayName": "Missing image",
        },  # line 7
        {
            "id": 1,
            "gender": "Women",
            "year": 2012,
            "productDisplayName": "Duplicate of one",
        },  # line 8
        {"id": 12, "gender": "Men", "year": 2011, "productDisplayName": "Truncated jpeg"},  # line 9
        {
            "id": 13,
            "gender": "Women",
            "year": 2012,
            "productDisplayName": "A png named jpg",
        },  # line 10
    ]
    (images / "10.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
    whole = jpeg((10, 200, 10), size=(64, 64))
    (images / "12.jpg").write_bytes(whole[: len(whole) // 2])
    (images / "13.jpg").write_bytes(jpeg((200, 0, 200), fmt="PNG"))
    styles = write_csv(tmp_path, rows)
    report_file = tmp_path / "out" / "report.json"

    report = run_ingest(
        open_catalog(styles),
        store,
        FakeEncoder(),
        batch_size=4,
        report_path=report_file,
        progress=False,
    )

    assert report.completed and report.read == 9
    assert report.stored == 4 and store.count() == 4
    assert sorted(stored_ids(store), key=int) == ["1", "2", "3", "13"]
    assert report.skipped == {UNREADABLE_IMAGE: 2, NO_ID: 1, MISSING_IMAGE: 1, DUPLICATE_ID: 1}
    by_line = {issue.line: issue for issue in report.issues}
    assert by_line.keys() == {5, 6, 7, 8, 9}
    assert by_line[5].kind == UNREADABLE_IMAGE and by_line[5].file == str(images / "10.jpg")
    assert by_line[5].product_id == "10"
    assert by_line[6].kind == NO_ID and by_line[6].file is None
    assert by_line[7].kind == MISSING_IMAGE and by_line[7].file == str(images / "11.jpg")
    assert by_line[8].kind == DUPLICATE_ID and "line 2" in by_line[8].reason
    assert by_line[9].kind == UNREADABLE_IMAGE and by_line[9].file == str(images / "12.jpg")
    # The first occurrence of a duplicated id is the one kept.
    (first,) = store.retrieve(["1"])
    assert first.payload["productDisplayName"] == "Product 1 shirt"
    # The JSON report has everything; the summary names the reasons and the report file.
    saved = json.loads(report_file.read_text())
    assert saved["stored"] == 4 and saved["skipped_total"] == 5 and saved["completed"] is True
    assert sorted((i["line"], i["kind"]) for i in saved["issues"]) == sorted(
        (k, v.kind) for k, v in by_line.items()
    )
    summary = "\n".join(report.summary_lines(shown_issues=2))
    assert (
        "stored 4 products" in summary
        and "duplicate_id 1" in summary
        and "missing_image 1" in summary
    )
    assert (
        "styles.csv line 5 (id 10)" in summary
        and "… and 3 more" in summary
        and str(report_file) in summary
    )


def test_bad_rows_in_parquet(edge_store: VectorStore, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [1, 2, None, 4, 2, 6]
    blobs = [
        jpeg((200, 0, 0)),
        jpeg((0, 0, 200)),
        jpeg((0, 200, 0)),
        b"garbage",
        jpeg((9, 9, 9)),
        None,
    ]
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "productDisplayName": [f"item {i}" for i in range(6)],
            "image": pa.array(
                [{"bytes": b, "path": None} for b in blobs],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
        }
    )
    (tmp_path / "ds" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "ds" / "data" / "train.parquet")
    report = run_ingest(open_catalog(tmp_path / "ds"), edge_store, FakeEncoder(), progress=False)
    assert sorted(stored_ids(edge_store)) == ["1", "2"]
    assert {(i.row, i.kind) for i in report.issues} == {
        (2, NO_ID),
        (3, UNREADABLE_IMAGE),
        (4, DUPLICATE_ID),
        (5, NO_IMAGE),
    }


def test_reader_errors_are_reported_not_fatal(edge_store: VectorStore, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(jpeg((1, 2, 3)))
    (tmp_path / "x.jsonl").write_text(
        '{"id": "a", "productDisplayName": "A"}\n{broken\n', encoding="utf-8"
    )
    report = run_ingest(
        open_catalog(tmp_path / "x.jsonl", images=tmp_path / "imgs", image_pattern="{id}.jpg"),
        edge_store,
        FakeEncoder(),
        progress=False,
    )
    assert report.stored == 1 and report.skipped == {BAD_ROW: 1}
    assert report.issues[0].line == 2 and "invalid JSON" in report.issues[0].reason


class PickyEncoder(FakeEncoder):
    """Refuses images smaller than 8 px, as some real models do."""

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        if any(min(img.size) < 8 for img in images):
            raise ValueError("image too small")
        return super().encode_images(images, batch_size)


def test_an_item_the_encoder_refuses_is_reported_and_the_batch_still_stored(
    edge_store: VectorStore, tmp_path: Path
) -> None:
    rows = good_rows(tmp_path, 5)
    (tmp_path / "images" / "3.jpg").write_bytes(jpeg((5, 5, 5), size=(4, 4)))
    report = run_ingest(
        open_catalog(write_csv(tmp_path, rows)),
        edge_store,
        PickyEncoder(),
        batch_size=8,
        progress=False,
    )
    assert report.stored == 4 and edge_store.count() == 4
    assert [(i.product_id, i.kind) for i in report.issues] == [("3", ENCODE_FAILED)]


def test_an_encoder_that_fails_everything_stops_the_run(
    edge_store: VectorStore, tmp_path: Path
) -> None:
    rows = good_rows(tmp_path, 3)
    for i in (1, 2, 3):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(jpeg((5, 5, 5), size=(4, 4)))
    with pytest.raises(EncoderError, match="failed on a whole batch"):
        run_ingest(
            open_catalog(write_csv(tmp_path, rows)), edge_store, PickyEncoder(), progress=False
        )


# --------------------------------------------------------------------------- resumability


def test_rerun_skips_unchanged_force_reembeds_changes_are_reembedded(
    store: VectorStore, tmp_path: Path
) -> None:
    rows = good_rows(tmp_path, 20)
    styles = write_csv(tmp_path, rows)
    encoder = FakeEncoder()
    first = run_ingest(open_catalog(styles), store, encoder, batch_size=6, progress=False)
    assert first.stored == 20 and store.count() == 20 and encoder.images_encoded == 20
    hubness = store.hubness_info()
    assert first.hubness_points == 20 and hubness is not None and hubness.points == 20
    assert all(isinstance(p.payload[HUBNESS_KEY], float) for p in store.scroll())

    again = run_ingest(open_catalog(styles), store, encoder, batch_size=6, progress=False)
    assert (again.stored, again.unchanged, store.count()) == (0, 20, 20)
    assert encoder.images_encoded == 20  # skipped before decoding or encoding anything
    assert again.hubness_points == 0 and store.hubness_info() == hubness  # nothing to redo

    forced = run_ingest(
        open_catalog(styles), store, encoder, batch_size=6, force=True, progress=False
    )
    assert (forced.stored, forced.unchanged, store.count()) == (20, 0, 20)

    rows[4]["productDisplayName"] = "Renamed red dress"
    (tmp_path / "images" / "9.jpg").write_bytes(jpeg((250, 250, 250)))
    changed = run_ingest(open_catalog(write_csv(tmp_path, rows)), store, encoder, progress=False)
    assert (changed.stored, changed.unchanged, store.count()) == (2, 18, 20)
    assert changed.hubness_points == 20  # every value depends on every text
    (renamed,) = store.retrieve(["5"], with_vectors=True)
    assert HUBNESS_KEY in renamed.payload
    assert renamed.payload["productDisplayName"] == "Renamed red dress"
    np.testing.assert_allclose(
        renamed.vectors[TEXT], encoder.encode_texts(["Renamed red dress, Women"])[0], atol=1e-5
    )


def test_a_run_that_only_rewrites_the_hubness_values_rebuilds_the_graph(tmp_path: Path) -> None:
    """A run that finds every product unchanged but refreshes the hubness values (a run
    resumed after a kill that came before the record was kept) rewrites every payload, which
    moves the products out of their indexed segment: it builds the graph again, and the
    reopened store's graph covers every vector (the engine's counters show the move only
    after a reload)."""
    from clipy_qdrant.store.verify import verify_store

    styles = write_csv(tmp_path, good_rows(tmp_path, 20))
    encoder = FakeEncoder()
    with open_store(tmp_path / "store") as store:
        first = run_ingest(open_catalog(styles), store, encoder, progress=False)
        assert first.index_built and first.stored == 20
        store.set_hubness_info(None)
    with open_store(tmp_path / "store") as store:
        again = run_ingest(open_catalog(styles), store, encoder, progress=False)
        assert (again.stored, again.unchanged, again.hubness_points) == (0, 20, 20)
        assert again.index_built
    with open_store(tmp_path / "store") as store:
        report = verify_store(store)
        assert report.ok, report.problems


def test_limit_and_payload_and_indexes(edge_store: VectorStore, tmp_path: Path) -> None:
    rows = good_rows(tmp_path, 12)
    rows[0]["gender"] = ""  # empty: left out of the payload
    styles = write_csv(tmp_path, rows)
    encoder = FakeEncoder()
    report = run_ingest(open_catalog(styles), edge_store, encoder, limit=7, progress=False)
    assert report.stored == 7 and edge_store.count() == 7
    # Inferred from the data, plus the held-out split that ingest writes for evaluation.
    assert report.indexed_fields == {"gender": "keyword", "year": "integer", "split": "keyword"}
    created = edge_store.indexed_fields()  # the store adds its own (product_id)
    assert created["gender"] == "keyword" and created["year"] == "integer"
    assert created["split"] == "keyword"
    assert "productDisplayName" not in created
    (one,) = edge_store.retrieve(["1"], with_vectors=True)
    assert one.payload["year"] == 2011 and isinstance(one.payload["year"], int)
    assert "gender" not in one.payload
    assert one.payload["split"] == "train"  # id 1: 1 % 5 != 0
    image = Image.open(tmp_path / "images" / "1.jpg").convert("RGB")
    np.testing.assert_allclose(one.vectors[IMAGE], encoder.encode_images([image])[0], atol=1e-5)
    rest = run_ingest(open_catalog(styles), edge_store, encoder, progress=False)
    assert (rest.stored, rest.unchanged, edge_store.count()) == (5, 7, 12)


def test_encoder_mismatch_is_refused_and_keeps_the_data(
    edge_store: VectorStore, tmp_path: Path
) -> None:
    styles = write_csv(tmp_path, good_rows(tmp_path, 5))
    run_ingest(open_catalog(styles), edge_store, FakeEncoder(), progress=False)
    with pytest.raises(EncoderMismatchError):
        run_ingest(open_catalog(styles), edge_store, FakeEncoder(dim=16), progress=False)
    assert edge_store.count() == 5
    (point,) = edge_store.retrieve(["2"], with_vectors=True)
    assert point.vectors[IMAGE].shape == (32,)


def test_progress_and_reports_go_to_stderr(
    edge_store: VectorStore, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    styles = write_csv(tmp_path, good_rows(tmp_path, 3))
    run_ingest(open_catalog(styles), edge_store, FakeEncoder(), progress=True)
    out, err = capfd.readouterr()
    assert out == ""
    assert "3/3" in err


def test_content_hash_covers_encoder_text_image_and_metadata() -> None:
    base = Product(product_id="1", text="red shirt", metadata={"year": 2011})
    h = content_hash("fake", 32, base, b"img")
    assert h == content_hash(
        "fake", 32, Product(product_id="1", text="red shirt", metadata={"year": 2011}), b"img"
    )
    assert h != content_hash("other", 32, base, b"img")
    assert h != content_hash("fake", 64, base, b"img")
    assert h != content_hash("fake", 32, base, b"img2")
    assert h != content_hash(
        "fake", 32, Product(product_id="1", text="red shirts", metadata={"year": 2011}), b"img"
    )
    assert h != content_hash(
        "fake", 32, Product(product_id="1", text="red shirt", metadata={"year": 2012}), b"img"
    )


def test_infer_indexed_fields() -> None:
    products = [
        Product(
            product_id=str(i),
            text="",
            metadata={
                "colour": ["Red", "Blue", "Green"][i % 3],
                "year": 2000 + i % 4,
                "price": 9.5 + i,
                "name": f"Unique product name {i}",
                "tags": ["a"],
                "mixed": i if i % 2 else "x",
            },
        )
        for i in range(30)
    ]
    assert infer_indexed_fields(products) == {
        "colour": "keyword",
        "price": "float",
        "year": "integer",
    }


# --------------------------------------------------------------------------- kill and resume

KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from fake_encoder import FakeEncoder
from clipy_qdrant.store.edge import EdgeStore
from ingest.pipeline import run_ingest
from ingest.readers import open_catalog


class AnnouncingStore(EdgeStore):
    def upsert(self, points):
        super().upsert(points)
        print("stored", len(points), flush=True)


store = AnnouncingStore(sys.argv[2])
run_ingest(open_catalog(sys.argv[1]), store, FakeEncoder(), batch_size=int(sys.argv[3]),
           progress=False, indexed_fields={{"gender": "keyword"}}, build_index=False)
print("done", flush=True)
"""


def write_synthetic_parquet(root: Path, n: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    colours = rng.integers(0, 256, size=(n, 3))
    table = pa.table(
        {
            "id": pa.array(range(100_000, 100_000 + n), pa.int64()),
            "gender": [["Men", "Women", "Unisex"][i % 3] for i in range(n)],
            "productDisplayName": [f"Synthetic product {i}" for i in range(n)],
            "image": pa.array(
                [
                    {
                        "bytes": jpeg((int(rgb[0]), int(rgb[1]), int(rgb[2])), size=(8, 8)),
                        "path": None,
                    }
                    for rgb in colours
                ],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
        }
    )
    path = root / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path, row_group_size=500)
    return root


@pytest.mark.slow
def test_killed_run_resumes_and_stores_every_product_exactly_once(tmp_path: Path) -> None:
    n, batch = 2000, 40
    source = write_synthetic_parquet(tmp_path / "ds", n)
    store_dir = tmp_path / "store"
    script = tmp_path / "ingest_child.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT.format(tests=str(TESTS))))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(source), str(store_dir), str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    batches = 0
    try:
        for line in child.stdout:
            if line.startswith("stored"):
                batches += 1
                if batches == 8:
                    child.send_signal(signal.SIGKILL)
                    break
            assert not line.startswith("done"), "the run finished before it could be killed"
    finally:
        child.kill()
        _, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err

    store = open_store(store_dir)
    try:
        after_kill = store.count()
        assert batches * batch <= after_kill < n
        assert store.hubness_info() is None  # stale from the first write of the killed run
        report = run_ingest(
            open_catalog(source),
            store,
            FakeEncoder(),
            batch_size=batch,
            progress=False,
            build_index=False,
        )
        assert report.unchanged >= batches * batch
        assert report.stored + report.unchanged == n and report.skipped == {}
        ids = stored_ids(store)
        assert len(ids) == n == store.count()
        assert set(ids) == {str(i) for i in range(100_000, 100_000 + n)}
        hubness = store.hubness_info()
        assert hubness is not None and hubness.points == n == report.hubness_points
    finally:
        store.close()


# --------------------------------------------------------------------------- the real catalog


@pytest.mark.catalog
@pytest.mark.slow
def test_catalog_ingest_and_rerun_stores_nothing_twice(edge_store: VectorStore) -> None:
    n = 3000
    report = run_ingest(
        open_catalog(Settings().catalog, limit=n),
        edge_store,
        FakeEncoder(),
        progress=False,
        build_index=False,
    )
    assert report.stored == n and report.skipped == {} and edge_store.count() == n
    assert {"gender", "articleType", "baseColour", "season", "usage", "year"} <= set(
        report.indexed_fields
    )
    assert "productDisplayName" not in report.indexed_fields
    again = run_ingest(
        open_catalog(Settings().catalog, limit=n),
        edge_store,
        FakeEncoder(),
        progress=False,
        build_index=False,
    )
    assert (again.stored, again.unchanged, edge_store.count()) == (0, n, n)


# --------------------------------------------------------------------------- value types


def test_one_bad_cell_keeps_its_column_numeric_and_is_reported(
    edge_store: VectorStore, tmp_path: Path
) -> None:
    """Issue #20 item 2: a ``2012a`` among the years is reported (file, line, field) and left
    out of that product's payload; the column stays integer, so a range filter still finds
    every other product."""
    from clipy_qdrant.search import Searcher

    rows = good_rows(tmp_path, 10)  # lines 2-11, years 2010-2012
    rows[3]["year"] = "2012a"  # id 4, line 5
    styles = write_csv(tmp_path, rows)
    encoder = FakeEncoder()
    report = run_ingest(open_catalog(styles), edge_store, encoder, progress=False)
    assert report.stored == 10 and report.skipped_total == 0 and report.bad_values == 1
    assert report.indexed_fields["year"] == "integer"
    (issue,) = report.issues
    assert (issue.kind, issue.source, issue.line, issue.field, issue.product_id) == (
        BAD_VALUE, str(styles), 5, "year", "4",
    )  # fmt: skip
    assert "'2012a' is not an integer" in issue.reason
    assert f"{styles} line 5 (id 4) field year: '2012a'" in "\n".join(report.summary_lines())
    assert report.to_dict()["issues"][0]["field"] == "year"
    (four,) = edge_store.retrieve(["4"])
    assert "year" not in four.payload and four.payload["gender"] == "Men"
    hits = Searcher(edge_store, encoder).search("shirt", filters=["year>=2000"], k=20)
    assert sorted(int(h.product_id) for h in hits) == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert all(isinstance(h.payload["year"], int) for h in hits)


def test_jsonl_string_among_numbers_is_converted_or_reported(
    edge_store: VectorStore, tmp_path: Path
) -> None:
    rows = good_rows(tmp_path, 6)
    rows[1]["year"] = "2011"  # a numeric string fits the integer field
    rows[2]["year"] = "soon"  # does not fit: reported, left out
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    report = run_ingest(open_catalog(path), edge_store, FakeEncoder(), progress=False)
    assert report.stored == 6 and report.indexed_fields["year"] == "integer"
    assert [(i.line, i.field) for i in report.issues] == [(3, "year")]
    payloads = {p.product_id: p.payload for p in edge_store.scroll()}
    assert payloads["2"]["year"] == 2011 and "year" not in payloads["3"]


# --------------------------------------------------------------------------- empty catalogs


def test_a_catalog_without_rows_is_an_error_and_creates_nothing(
    edge_store: VectorStore, tmp_path: Path
) -> None:
    (tmp_path / "images").mkdir()
    styles = write_csv(tmp_path, [])
    with pytest.raises(InputError, match=r"catalog .*styles.csv has no products"):
        run_ingest(open_catalog(styles), edge_store, FakeEncoder(), progress=False)
    assert edge_store.encoder_info() is None
    assert not (tmp_path / "store").exists()


def test_a_catalog_whose_every_row_is_skipped_is_an_error(
    store: VectorStore, tmp_path: Path
) -> None:
    rows = good_rows(tmp_path, 3)
    for row in rows:
        row["id"] = ""
    styles = write_csv(tmp_path, rows).rename(tmp_path / "no-ids.csv")
    report_path = tmp_path / "report.json"
    with pytest.raises(InputError, match=r"no usable rows: 3 skipped, first: .* line 2: row has"):
        run_ingest(
            open_catalog(styles), store, FakeEncoder(), progress=False, report_path=report_path
        )
    assert store.encoder_info() is None  # the collection this run created is removed again
    assert json.loads(report_path.read_text())["skipped"] == {NO_ID: 3}
    # A store that holds products is never removed, and keeps them.
    good = write_csv(tmp_path, good_rows(tmp_path, 2))
    run_ingest(open_catalog(good), store, FakeEncoder(), progress=False)
    with pytest.raises(InputError, match="no usable rows"):
        run_ingest(open_catalog(styles), store, FakeEncoder(), progress=False)
    assert sorted(stored_ids(store)) == ["1", "2"]


def test_stored_values_agree_with_their_index_type(edge_store: VectorStore, tmp_path: Path) -> None:
    """Values beyond the inference sample (here: given indexes) are made to fit the index
    (an int in a float field becomes a float) or reported and left out."""
    (tmp_path / "images").mkdir()
    products = []
    for i, (year, price) in enumerate([(2011, 5), (2012.0, 7.5), ("soon", 9.5), (True, "n/a")]):
        image = tmp_path / "images" / f"{i}.png"
        Image.new("RGB", (8, 8), COLOURS[i]).save(image)
        products.append(
            Product(
                product_id=str(i),
                text=f"shirt {i}",
                metadata={"year": year, "price": price},
                image_path=image,
                row=i,
                source="list",
            )
        )
    report = run_ingest(
        products,
        edge_store,
        FakeEncoder(),
        progress=False,
        indexed_fields={"year": "integer", "price": "float"},
    )
    assert report.stored == 4 and report.bad_values == 3
    assert [(i.row, i.field) for i in report.issues] == [(2, "year"), (3, "year"), (3, "price")]
    assert "(the field is indexed as integer)" in report.issues[0].reason
    payloads = {p.product_id: p.payload for p in edge_store.scroll()}
    assert payloads["0"]["price"] == 5.0 and isinstance(payloads["0"]["price"], float)
    assert payloads["1"]["year"] == 2012 and isinstance(payloads["1"]["year"], int)
    assert "year" not in payloads["2"] and "price" not in payloads["3"]
    assert edge_store.count(parse_filter(["price>=5"])) == 3
