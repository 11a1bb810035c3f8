"""Ray ingest with the actors writing into the store themselves (``worker_store``), against
the plain pipeline.

The actor code (:class:`~ingest.distributed.EncodeActor` with its
:class:`~ingest.distributed.WorkerWriter`) and the driver's part of
:class:`~ingest.distributed.RayRunner` run for real; only the step that hands rows to Ray
Data is replaced by one actor called in this process, its result batches handed back in
reverse order (Ray returns them as they finish). That keeps the target an in-memory
qdrant-client store, which a Ray worker process could not reach; each actor gets its own
store object on that store's client, reading the collection's recorded metadata as a
worker's client reads it from a server. The same run against a real server and real Ray
workers is in ``tests/test_distributed.py``'s server tier.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_encoder import FakeEncoder
from test_distributed import assert_same_lexical, assert_same_store, issues, lexical_of
from test_ingest import good_rows, jpeg, write_csv

from clipy_qdrant.errors import EncoderError, StoreError
from clipy_qdrant.store.base import PointRecord, VectorStore
from clipy_qdrant.store.client import ClientStore
from ingest.distributed import EncodeActor, RayOptions, RayRunner, WorkerTarget
from ingest.pipeline import (
    DUPLICATE_ID,
    ENCODE_FAILED,
    MISSING_IMAGE,
    NO_ID,
    UNREADABLE_IMAGE,
    IngestReport,
    run_ingest,
)
from ingest.readers import open_catalog

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'clipy-qdrant[ray]'")

OPTIONS = RayOptions(actors=1, batch_size=3)


class InProcessRunner(RayRunner):
    """:class:`RayRunner` whose window runs through one :class:`EncodeActor` in this process;
    every result batch it hands back is kept in ``results``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: list[dict[str, np.ndarray]] = []

    def _results(
        self, rows: list[dict[str, Any]], target: WorkerTarget | None
    ) -> Iterator[dict[str, np.ndarray]]:
        actor = EncodeActor(self.factory, target)
        size = self.options.batch_size
        batches = [rows[start : start + size] for start in range(0, len(rows), size)]
        outputs = [actor(_numpy_batch(batch)) for batch in batches]
        self.results.extend(outputs)
        return iter(reversed(outputs))


def _numpy_batch(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows as a Ray Data numpy batch: one array per column."""
    batch: dict[str, np.ndarray] = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        batch[name] = (
            np.array(values, dtype=bool)
            if isinstance(values[0], bool)
            else np.array(values, dtype=object)
        )
    return batch


def worker_view(store: ClientStore) -> ClientStore:
    """Another store object on ``store``'s client, its metadata read back from the collection
    (what a worker's client sees after the driver's writes)."""
    view = copy.copy(store)
    view._meta = view._read_meta()
    return view


def mixed_catalog(root: Path) -> Path:
    """Good products with names of different lengths (so the BM25 ``avg_len`` of the first
    batch differs from the others'), then bad rows: a corrupt JPEG, a row without id, a
    missing file, a duplicate id and a PNG."""
    rows = good_rows(root, 14)
    for row in rows:
        words = int(row["id"]) % 5 if int(row["id"]) > 3 else 8
        row["productDisplayName"] = f"Product {row['id']} " + "cotton shirt " * words
    images = root / "images"
    rows += [
        {"id": 30, "gender": "Men", "year": 2011, "productDisplayName": "Corrupt jpeg"},
        {"id": "", "gender": "Men", "year": 2011, "productDisplayName": "No id"},
        {"id": 31, "gender": "Women", "year": 2012, "productDisplayName": "Missing image"},
        {"id": 1, "gender": "Women", "year": 2012, "productDisplayName": "Duplicate of one"},
        {"id": 33, "gender": "Women", "year": 2012, "productDisplayName": "A png, red shirt"},
    ]
    (images / "30.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
    (images / "33.jpg").write_bytes(jpeg((200, 0, 200), size=(300, 400), fmt="PNG"))
    return write_csv(root, rows)


def plain_ingest(styles: Path) -> tuple[ClientStore, IngestReport]:
    store = ClientStore(":memory:")
    report = run_ingest(open_catalog(styles), store, FakeEncoder(), batch_size=4, progress=False)
    return store, report


def worker_ingest(
    styles: Path, store: ClientStore, opener: Any = None, factory: Any = None
) -> tuple[IngestReport, InProcessRunner]:
    runner = InProcessRunner(
        factory or functools.partial(FakeEncoder, 32),
        OPTIONS,
        opener or functools.partial(worker_view, store),
    )
    report = run_ingest(
        open_catalog(styles), store, FakeEncoder(), batch_size=4, progress=False, runner=runner
    )
    return report, runner


def test_workers_write_the_store_the_plain_ingest_writes(tmp_path: Path) -> None:
    styles = mixed_catalog(tmp_path)
    plain_store, plain = plain_ingest(styles)
    store = ClientStore(":memory:")
    report, runner = worker_ingest(styles, store)

    # Nothing but ids and outcomes came back: no vectors, no thumbnails.
    assert runner.results and len(runner.results) > 2
    for out in runner.results:
        assert out["text_vector"].shape[1] == out["image_vector"].shape[1] == 1
        assert not out["text_vector"].any() and not any(out["thumbnail"])
        assert not any(out["fatal"])

    assert_same_store(plain_store, store)
    # BM25 constants from the first batch's texts, whatever order the results came in.
    assert_same_lexical(plain_store, store)
    assert report.completed and report.read == plain.read == 19
    assert report.stored == plain.stored == 15
    assert report.skipped == plain.skipped == {
        UNREADABLE_IMAGE: 1, NO_ID: 1, MISSING_IMAGE: 1, DUPLICATE_ID: 1,
    }  # fmt: skip
    # Each bad row once, in input order, as the plain run reports it.
    assert issues(report) == issues(plain)
    assert report.hubness_points == plain.hubness_points == 15
    assert store.hubness_info() == plain_store.hubness_info() is not None

    # A re-run sends only the product never stored (its image does not decode).
    again, runner = worker_ingest(styles, store)
    assert again.stored == 0 and again.unchanged == 15
    assert [list(out["id"]) for out in runner.results] == [["30"]]
    assert issues(again) == issues(plain)


class FailingUpserts:
    """A worker's store whose upserts fail after ``allowed`` of them (the server goes away)."""

    def __init__(self, store: ClientStore, allowed: int) -> None:
        self.store = worker_view(store)
        self.allowed = allowed

    def upsert(self, points: Sequence[PointRecord]) -> None:
        if self.allowed == 0:
            raise StoreError("store http://qdrant:6333 collection 'products': upsert failed")
        self.allowed -= 1
        self.store.upsert(points)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_worker_store_failure_stops_the_run_in_one_line_and_a_rerun_resumes(
    tmp_path: Path,
) -> None:
    styles = mixed_catalog(tmp_path)
    plain_store, _ = plain_ingest(styles)
    store = ClientStore(":memory:")
    with pytest.raises(StoreError) as caught:
        worker_ingest(styles, store, opener=lambda: FailingUpserts(store, allowed=2))
    assert str(caught.value) == "store http://qdrant:6333 collection 'products': upsert failed"
    written = store.count()
    assert 0 < written < 15

    report, _ = worker_ingest(styles, store)
    assert report.unchanged == written and report.stored + report.unchanged == 15
    assert_same_store(plain_store, store)
    assert_same_lexical(plain_store, store)
    assert store.hubness_info() is not None


def test_a_worker_that_cannot_open_the_store_stops_the_run(tmp_path: Path) -> None:
    styles = mixed_catalog(tmp_path)

    def unreachable() -> VectorStore:
        raise StoreError("store http://nowhere:6333 collection 'products': reading failed")

    with pytest.raises(StoreError) as caught:
        worker_ingest(styles, ClientStore(":memory:"), opener=unreachable)
    assert str(caught.value) == (
        "cannot open the store on a Ray worker: "
        "store http://nowhere:6333 collection 'products': reading failed"
    )


class RefusesPurple(FakeEncoder):
    """Fails on images that are mostly purple (the PNG of the catalog)."""

    def encode_images(self, images, batch_size=32):  # type: ignore[no-untyped-def]
        for image in images:
            r, g, b = image.convert("RGB").getpixel((0, 0))
            if r > 150 and b > 150 and g < 50:
                raise ValueError("cannot encode this image")
        return super().encode_images(images, batch_size)


def test_encoder_failures_on_writing_workers_are_reported_once(tmp_path: Path) -> None:
    styles = mixed_catalog(tmp_path)
    store = ClientStore(":memory:")
    report, _ = worker_ingest(styles, store, factory=functools.partial(RefusesPurple, 32))
    assert report.stored == 14 == store.count()
    (failed,) = [i for i in report.issues if i.kind == ENCODE_FAILED]
    assert failed.product_id == "33" and "cannot encode this image" in failed.reason
    assert len(report.issues) == 5
    assert store.retrieve(["33"]) == []

    def broken() -> FakeEncoder:
        raise RuntimeError("weights file is truncated")

    with pytest.raises(EncoderError, match="cannot load the encoder on a Ray worker"):
        worker_ingest(styles, ClientStore(":memory:"), factory=broken)


def test_real_ray_actors_write_into_a_store_they_open_themselves(tmp_path: Path) -> None:
    """Real Ray workers (a local Ray started by the run): the actor opens the target by
    itself and writes every product there. The target is an embedded store in a folder only
    the actor opens (standing in for a server, which this test tier has none of), created
    beforehand with the BM25 constants the driver fixes; the driver's own store, an
    in-memory one, only sees the bookkeeping."""
    from clipy_qdrant.lexical import Bm25Params
    from clipy_qdrant.store.edge import EdgeStore
    from ingest.distributed import run_ray_ingest

    styles = mixed_catalog(tmp_path)
    first_batch = [p.text for p in open_catalog(styles)][:4]
    with EdgeStore(tmp_path / "target") as target:
        target.ensure_collection(FakeEncoder(32).info)
        target.set_bm25_params(Bm25Params.for_texts(first_batch))
    driver_store = ClientStore(":memory:")
    report = run_ray_ingest(
        open_catalog(styles), driver_store, functools.partial(FakeEncoder, 32),
        RayOptions(actors=1, batch_size=5), encoder=FakeEncoder(),
        worker_store=functools.partial(EdgeStore, tmp_path / "target"),
        batch_size=4, progress=False, hubness=False,
    )  # fmt: skip
    assert report.stored == 15 and len(report.issues) == 4
    assert driver_store.count() == 0
    with EdgeStore(tmp_path / "plain") as plain_store, EdgeStore(tmp_path / "target") as target:
        run_ingest(
            open_catalog(styles), plain_store, FakeEncoder(), batch_size=4, progress=False,
            hubness=False,
        )  # fmt: skip
        assert target.bm25_params() == plain_store.bm25_params()
        assert_same_store(plain_store, target)
        assert lexical_of(target) == lexical_of(plain_store)
