"""Move a store to another backend without re-embedding: points, metadata and thumbnails.

:func:`copy_store` reads every point of the source (both named vectors and the whole
payload: product metadata, the ingest content hash, hubness values, and any other key such as
a server-side thumbnail reference) in pages and writes them to the target in batches. The
target collection is created with the source's encoder and payload indexes, and the hubness
record follows, so a search on the target behaves as on the source.

A point whose copy already matches on the target (same payload, vectors within
:data:`VECTOR_TOLERANCE`) is skipped, so an interrupted copy resumes where it stopped.
The copy ends with a verification pass that compares every source point with the target's
and the point counts; :class:`CopyReport` names any mismatch.

Thumbnails kept beside an embedded store (``<store>/thumbnails/``) are copied when both
stores are embedded folders; a target server gets no files, only the payload.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.errors import StoreError
from clipy_qdrant.store.base import (
    CONTENT_HASH_KEY,
    PRODUCT_ID_KEY,
    PointRecord,
    StoredPoint,
    VectorStore,
)
from clipy_qdrant.store.options import SERVER_ONLY, CollectionOptions

#: Largest difference per vector component still counted as the same vector: the engines
#: store cosine vectors normalised, so a copy may differ from the source in the last bits.
VECTOR_TOLERANCE = 1e-6

#: Folder of an embedded store holding product thumbnails.
THUMBNAILS_DIR = "thumbnails"

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
    #: Source products whose target copy is absent or differs after the copy.
    mismatched: list[str] = field(default_factory=list)
    #: Metadata that differs (encoder, payload indexes, hubness record).
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
            "ok": self.ok,
            "mismatched": self.mismatched,
            "meta_problems": self.meta_problems,
        }


def same_point(a: StoredPoint, b: StoredPoint) -> bool:
    """Same payload and the same named vectors (each within :data:`VECTOR_TOLERANCE`)."""
    if a.payload != b.payload or set(a.vectors) != set(b.vectors):
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


def _target_options(
    source: VectorStore, target: VectorStore, options: CollectionOptions | None
) -> CollectionOptions | None:
    """The layout for a target collection the copy creates: ``options`` if given, else the
    source's (server-only options dropped for an embedded target)."""
    from clipy_qdrant.store.edge import EdgeStore

    chosen = options or source.collection_options()
    if chosen is not None and isinstance(target, EdgeStore) and options is None:
        chosen = chosen.model_copy(update=dict.fromkeys(SERVER_ONLY))
    return chosen


def _prepare_target(
    source: VectorStore, target: VectorStore, options: CollectionOptions | None
) -> None:
    encoder = source.encoder_info()
    if encoder is None:
        raise StoreError(f"source store {source!r} has no collection; nothing to copy")
    if target.collection_options() is None:
        chosen = _target_options(source, target, options)
        request = getattr(target, "request_options", None)
        if chosen is not None and request is not None:
            request(chosen)
    fields: Mapping[str, Any] = {
        k: v for k, v in source.indexed_fields().items() if k != PRODUCT_ID_KEY
    }
    target.ensure_collection(encoder, fields)


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
    return problems


def copy_thumbnails(source: VectorStore, target: VectorStore) -> int:
    """Copy ``<source>/thumbnails/`` into ``<target>/thumbnails/`` when both are embedded
    folders; files already there with the same size are kept. Returns files copied."""
    src_path, dst_path = getattr(source, "path", None), getattr(target, "path", None)
    if not isinstance(src_path, Path) or not isinstance(dst_path, Path):
        return 0
    src_dir = src_path / THUMBNAILS_DIR
    if not src_dir.is_dir():
        return 0
    copied = 0
    for file in sorted(src_dir.rglob("*")):
        if not file.is_file():
            continue
        dest = dst_path / THUMBNAILS_DIR / file.relative_to(src_dir)
        if dest.is_file() and dest.stat().st_size == file.stat().st_size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, dest)
        copied += 1
    return copied


def copy_store(
    source: VectorStore,
    target: VectorStore,
    *,
    batch: int = 512,
    progress: bool = True,
    options: CollectionOptions | None = None,
    max_batches: int | None = None,
    verify: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> CopyReport:
    """Copy every point and the metadata of ``source`` into ``target`` (see the module doc).

    ``options`` lay out the target collection when the copy creates it (default: the
    source's). ``max_batches`` stops after that many source pages (the report is then not
    ``complete`` and not verified; run again to resume). ``on_batch(points_done)`` is called
    after each page. Raises ``StoreError`` for an empty source or another encoder on the
    target; mismatches found by the verification are in the report, not raised.
    """
    if batch < 1:
        raise StoreError(f"copy batch must be >= 1 (got {batch})")
    from tqdm import tqdm

    started = time.perf_counter()
    report = CopyReport(source=repr(source), target=repr(target))
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
        report.thumbnails = copy_thumbnails(source, target)
        if verify:
            report.mismatched = [
                p.product_id for page in _pages(source, batch) for p in _unmatched(page, target)
            ]
            report.meta_problems = _check_meta(source, target)
            report.verified = True
    report.target_points = target.count()
    report.seconds = time.perf_counter() - started
    return report
