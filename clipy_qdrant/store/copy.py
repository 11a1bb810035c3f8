"""Move a store to another backend without re-embedding: points, metadata and thumbnails.

:func:`copy_store` reads every point of the source (both dense named vectors, the lexical
BM25 sparse vector and the whole payload: product metadata and text, the ingest content hash,
hubness values) in pages and writes them to the target in batches, then each product's
thumbnail through the store's own thumbnail calls (a sqlite file beside an embedded store, a
payload key on a server), so thumbnails move between any two backends. The target collection
is created with the source's encoder, payload indexes, layout and lexical channel (with or
without the sparse vector, and the BM25 constants its vectors were written with); the
hubness record and the catalog vocabulary (spelling correction, the lexical IDFs) follow a
complete copy, so a search on the target, its corrections included, behaves as on the
source.

Between two embedded stores, into an empty target with the source's layout, the shard moves
first as a qdrant-edge snapshot (segments with their HNSW graphs: no rebuild, ~26x faster
on a 20k-product store, docs/scaling.md); the point pass then only confirms and copies the
thumbnails.

A point whose copy already matches on the target (same payload, dense and sparse vectors
within :data:`VECTOR_TOLERANCE`, same thumbnail) is skipped, so an interrupted copy resumes where it
stopped. The copy ends with a verification pass that compares every source point and
thumbnail with the target's and the point counts; :class:`CopyReport` names any mismatch.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.errors import StoreError
from clipy_qdrant.lexical import SparseTerms
from clipy_qdrant.store.base import (
    CONTENT_HASH_KEY,
    PRODUCT_ID_KEY,
    PointRecord,
    StoredPoint,
    Thumbnail,
    VectorStore,
)
from clipy_qdrant.store.meta import StoreMeta
from clipy_qdrant.store.options import SERVER_ONLY, CollectionOptions

#: Largest difference per vector component still counted as the same vector: the engines
#: store cosine vectors normalised, so a copy may differ from the source in the last bits.
VECTOR_TOLERANCE = 1e-6

#: Mismatched product ids listed in a report's message.
_SHOWN = 5


@dataclass
class CopyReport:
    """What :func:`copy_store` did. ``complete``: every batch was processed (no limit hit);
    ``verified``: the verification pass ran; :attr:`ok`: complete, verified, no mismatch."""

    source: str
    target: str
    source_points: int = 0
    target_points: int = 0
    copied: int = 0
    skipped: int = 0
    batches: int = 0
    thumbnails: int = 0
    seconds: float = 0.0
    complete: bool = False
    verified: bool = False
    #: The shard moved as a snapshot (embedded to empty embedded) before the point pass.
    snapshot: bool = False
    #: Source products whose target copy (point or thumbnail) is absent or differs.
    mismatched: list[str] = field(default_factory=list)
    #: Metadata that differs (encoder, payload indexes, hubness record, lexical channel).
    meta_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.complete
            and self.verified
            and not self.mismatched
            and not self.meta_problems
            and self.source_points == self.target_points
        )

    def problems(self) -> str:
        """One line naming what the verification found ('' when nothing)."""
        parts = list(self.meta_problems)
        if self.source_points != self.target_points:
            parts.append(
                f"{self.source_points} points in the source, {self.target_points} in the target"
            )
        if self.mismatched:
            shown = ", ".join(self.mismatched[:_SHOWN])
            more = (
                f" and {len(self.mismatched) - _SHOWN} more"
                if len(self.mismatched) > _SHOWN
                else ""
            )
            parts.append(f"{len(self.mismatched)} product(s) differ or are missing: {shown}{more}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "source_points": self.source_points,
            "target_points": self.target_points,
            "copied": self.copied,
            "skipped": self.skipped,
            "batches": self.batches,
            "thumbnails": self.thumbnails,
            "seconds": round(self.seconds, 2),
            "complete": self.complete,
            "verified": self.verified,
            "snapshot": self.snapshot,
            "ok": self.ok,
            "mismatched": self.mismatched,
            "meta_problems": self.meta_problems,
        }


def same_sparse(a: SparseTerms | None, b: SparseTerms | None) -> bool:
    """The same sparse vector: the same term ids, weights within :data:`VECTOR_TOLERANCE`
    (``None`` and an empty vector are the same: neither is stored)."""
    if not a or not b:
        return not a and not b
    if a.indices != b.indices:
        return False
    return bool(np.max(np.abs(np.subtract(a.values, b.values))) <= VECTOR_TOLERANCE)


def same_point(a: StoredPoint, b: StoredPoint) -> bool:
    """Same payload, the same named vectors (each within :data:`VECTOR_TOLERANCE`) and the
    same lexical sparse vector."""
    if a.payload != b.payload or set(a.vectors) != set(b.vectors):
        return False
    if not same_sparse(a.lexical, b.lexical):
        return False
    return all(
        a.vectors[name].shape == b.vectors[name].shape
        and bool(np.max(np.abs(a.vectors[name] - b.vectors[name])) <= VECTOR_TOLERANCE)
        for name in a.vectors
    )


def _record(point: StoredPoint) -> PointRecord:
    payload = {
        k: v for k, v in point.payload.items() if k not in (PRODUCT_ID_KEY, CONTENT_HASH_KEY)
    }
    return PointRecord(
        point.product_id,
        point.vectors,
        payload,
        str(point.payload.get(CONTENT_HASH_KEY, "")),
        point.lexical,
    )


def _pages(store: VectorStore, batch: int) -> Iterator[list[StoredPoint]]:
    page: list[StoredPoint] = []
    for point in store.scroll(with_vectors=True, batch_size=batch):
        page.append(point)
        if len(page) == batch:
            yield page
            page = []
    if page:
        yield page


def _unmatched(page: Sequence[StoredPoint], target: VectorStore) -> list[StoredPoint]:
    """Points of ``page`` whose copy on ``target`` is absent or differs."""
    stored = {
        p.product_id: p
        for p in target.retrieve([p.product_id for p in page], with_payload=True, with_vectors=True)
    }
    return [
        p for p in page if p.product_id not in stored or not same_point(p, stored[p.product_id])
    ]


def _unmatched_thumbnails(
    page: Sequence[StoredPoint], source: VectorStore, target: VectorStore
) -> dict[str, Thumbnail]:
    """``{product_id: source thumbnail}`` for products of ``page`` whose thumbnail on
    ``target`` is absent or differs."""
    out: dict[str, Thumbnail] = {}
    for point in page:
        thumb = source.thumbnail(point.product_id)
        if thumb is not None and target.thumbnail(point.product_id) != thumb:
            out[point.product_id] = thumb
    return out


def _source_layout(source: VectorStore, target: VectorStore) -> CollectionOptions | None:
    """The source's layout for a target collection the copy creates, without the server-only
    options when the target is an embedded store."""
    from clipy_qdrant.store.edge import EdgeStore

    layout = source.collection_options()
    if layout is not None and isinstance(target, EdgeStore):
        layout = layout.model_copy(update=dict.fromkeys(SERVER_ONLY))
    return layout


def _snapshot_copy(
    source: VectorStore, target: VectorStore, options: CollectionOptions | None
) -> bool:
    """Move the source's shard to an empty embedded target as a snapshot, when both are
    embedded and the layout stays the source's; ``False`` (nothing done) otherwise."""
    from clipy_qdrant.store.edge import EdgeStore

    if not (isinstance(source, EdgeStore) and isinstance(target, EdgeStore)):
        return False
    encoder, layout = source.encoder_info(), source.collection_options()
    if encoder is None or layout is None or target.collection_options() is not None:
        return False
    if options is not None and options != layout:
        return False
    meta = StoreMeta(
        encoder,
        source.indexed_fields(),
        None,
        layout,
        lexical=source.has_lexical(),
        bm25=source.bm25_params(),
    )
    target.path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".clipy-copy-", dir=target.path.parent) as tmp:
        archive = Path(tmp) / "shard.tar"
        source.write_snapshot(archive)
        target.restore_snapshot(archive, meta)
    return True


def _prepare_target(
    source: VectorStore, target: VectorStore, options: CollectionOptions | None
) -> None:
    encoder = source.encoder_info()
    if encoder is None:
        raise StoreError(f"source store {source!r} has no collection; nothing to copy")
    # Options given explicitly are checked against an existing target collection too (a
    # different layout is an error); the source's apply only to a collection created here.
    layout = options
    if layout is None and target.collection_options() is None:
        layout = _source_layout(source, target)
    request = getattr(target, "request_options", None)
    if layout is not None and request is not None:
        request(layout)
    fields: Mapping[str, Any] = {
        k: v for k, v in source.indexed_fields().items() if k != PRODUCT_ID_KEY
    }
    # The lexical channel mirrors the source's: a target collection created here gets the
    # sparse vector only when the source has it, and the BM25 constants are recorded before
    # the first sparse vector is written (an existing target with others raises).
    target.ensure_collection(encoder, fields, lexical=source.has_lexical())
    params = source.bm25_params()
    if params is not None:
        target.set_bm25_params(params)


def _check_meta(source: VectorStore, target: VectorStore) -> list[str]:
    problems = []
    if source.encoder_info() != target.encoder_info():
        problems.append(
            f"encoder {target.encoder_info()} is not the source's {source.encoder_info()}"
        )
    src_fields, dst_fields = source.indexed_fields(), target.indexed_fields()
    missing = {k: v for k, v in src_fields.items() if dst_fields.get(k) != v}
    if missing:
        problems.append(f"payload indexes missing on the target: {missing}")
    if source.hubness_info() != target.hubness_info():
        problems.append(
            f"hubness record {target.hubness_info()} is not the source's {source.hubness_info()}"
        )
    if source.has_lexical() != target.has_lexical():
        have = "has" if target.has_lexical() else "has no"
        problems.append(f"the target {have} lexical (BM25) vector, unlike the source")
    if source.bm25_params() != target.bm25_params():
        problems.append(
            f"BM25 constants {target.bm25_params()} are not the source's {source.bm25_params()}"
        )
    if source.vocabulary() != target.vocabulary():
        problems.append(
            "the catalog vocabulary (spelling correction, BM25 IDFs) differs from the source's"
        )
    return problems


def copy_store(
    source: VectorStore,
    target: VectorStore,
    *,
    batch: int = 512,
    progress: bool = True,
    options: CollectionOptions | None = None,
    max_batches: int | None = None,
    verify: bool = True,
    build_index: bool = True,
    snapshot: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> CopyReport:
    """Copy every point and the metadata of ``source`` into ``target`` (see the module doc).

    ``options`` lay out the target collection when the copy creates it (default: the
    source's). ``max_batches`` stops after that many source pages (the report is then not
    ``complete`` and not verified; run again to resume). ``build_index``: after a complete
    copy, build the target's HNSW graph (the embedded store searches exactly until then; a
    server indexes by itself, and this waits for it). ``snapshot``: between two embedded
    stores, move the shard as a snapshot first when the target is empty, the layout stays
    the source's and no ``max_batches`` is set. ``on_batch(points_done)`` is called after
    each page. Raises ``StoreError`` for an empty source or another encoder on the
    target; mismatches found by the verification are in the report, not raised.
    """
    if batch < 1:
        raise StoreError(f"copy batch must be >= 1 (got {batch})")
    from tqdm import tqdm

    started = time.perf_counter()
    report = CopyReport(source=repr(source), target=repr(target))
    if snapshot and max_batches is None:
        report.snapshot = _snapshot_copy(source, target, options)
    _prepare_target(source, target, options)
    report.source_points = source.count()
    bar = tqdm(
        total=report.source_points,
        unit="point",
        desc="copy",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        done = 0
        for page in _pages(source, batch):
            if max_batches is not None and report.batches >= max_batches:
                break
            todo = _unmatched(page, target)
            if todo:
                target.upsert([_record(p) for p in todo])
            # After the points: writing a point may drop a thumbnail kept in its payload.
            thumbs = _unmatched_thumbnails(page, source, target)
            if thumbs:
                target.put_thumbnails(thumbs)
            report.thumbnails += len(thumbs)
            report.copied += len(todo)
            report.skipped += len(page) - len(todo)
            report.batches += 1
            done += len(page)
            bar.update(len(page))
            bar.set_postfix(copied=report.copied, skipped=report.skipped)
            if on_batch is not None:
                on_batch(done)
        else:
            report.complete = True
    finally:
        bar.close()
    if report.complete:
        target.set_hubness_info(source.hubness_info())
        vocabulary = source.vocabulary()
        if vocabulary is not None and target.vocabulary() != vocabulary:
            target.save_vocabulary(vocabulary)
        if build_index:
            target.build_index()
        if verify:
            check = verify_copy(source, target, batch=batch)
            report.mismatched, report.meta_problems = check.mismatched, check.meta_problems
            report.verified = True
    report.target_points = target.count()
    report.seconds = time.perf_counter() - started
    return report


def verify_copy(source: VectorStore, target: VectorStore, *, batch: int = 512) -> CopyReport:
    """Compare ``target`` with ``source`` without writing: every point (payload, dense and
    sparse vectors within :data:`VECTOR_TOLERANCE`) and thumbnail, the point counts and the
    metadata (encoder, payload indexes, hubness record, lexical vector, BM25 constants,
    vocabulary). The report names what differs."""
    started = time.perf_counter()
    report = CopyReport(source=repr(source), target=repr(target), complete=True, verified=True)
    if source.encoder_info() is None:
        raise StoreError(f"source store {source!r} has no collection; nothing to verify")
    report.source_points = source.count()
    report.target_points = target.count()
    if target.encoder_info() is None:
        report.meta_problems = ["the target has no collection"]
        report.seconds = time.perf_counter() - started
        return report
    for page in _pages(source, batch):
        differ = {p.product_id for p in _unmatched(page, target)}
        differ.update(_unmatched_thumbnails(page, source, target))
        report.mismatched.extend(sorted(differ))
        report.batches += 1
    report.meta_problems = _check_meta(source, target)
    report.seconds = time.perf_counter() - started
    return report
