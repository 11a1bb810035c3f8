"""Embedded store: Qdrant's own engine in-process (qdrant-edge-py), one folder per collection.

Layout of the store folder::

    <path>/clipy.json   encoder (name, dim), payload indexes, hubness record; written atomically
    <path>/clipy.pid    id of the process holding the shard open; removed when it closes
    <path>/shard/       the qdrant-edge shard (segments + WAL); locked by the process using it
    <path>/shard-manifest.json   sizes and checksums of the shard's files at the last clean
                        close (:mod:`~clipy_qdrant.store.manifest`); absent while being written
    <path>/thumbnails.sqlite   product thumbnails (:class:`~clipy_qdrant.thumbnails.ThumbnailDB`)
    <path>/vocabulary.json     catalog vocabulary (:class:`~clipy_qdrant.spelling.Vocabulary`)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.errors import ConfigError, StoreError, is_engine_panic
from clipy_qdrant.filters import Range, Scalar
from clipy_qdrant.lexical import LEXICAL, SparseTerms
from clipy_qdrant.store import manifest
from clipy_qdrant.store.base import Thumbnail
from clipy_qdrant.store.engine import Conditions, EnginePoint, EngineSearch, Selector
from clipy_qdrant.store.meta import StoreMeta
from clipy_qdrant.store.options import (
    CollectionOptions,
    edge_config,
    edge_load_config,
    edge_search_params,
    refuse_server_only,
)
from clipy_qdrant.store.qdrant import DEFAULT_HNSW_EF, QdrantStore
from clipy_qdrant.thumbnails import ThumbnailDB

META_FILE = "clipy.json"
PID_FILE = "clipy.pid"
SHARD_DIR = "shard"
THUMBNAIL_FILE = "thumbnails.sqlite"
VOCABULARY_FILE = "vocabulary.json"

#: Qdrant's default: below ~10 MB of vectors a scan beats the graph.
DEFAULT_FULL_SCAN_THRESHOLD_KB = 10_000

#: Threads of the engine's search pool, which searches a shard's segments in parallel. One:
#: requests already run side by side (``clipy serve``), and on the full catalog (two segments)
#: a 100-product restricted search took 0.47 ms of CPU with the engine's default pool (one
#: thread per CPU) against 0.14 with one thread, an HNSW list 2.37 against 1.69, with no
#: shorter wall time (docs/benchmarks.md, "HTTP API under load").
DEFAULT_SEARCH_THREADS = 1

#: clipy's payload index types -> qdrant-edge's PayloadSchemaType members.
_SCHEMA_NAMES = {
    "keyword": "Keyword",
    "integer": "Integer",
    "float": "Float",
    "text": "Text",
    "bool": "Bool",
}


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    # Write to a temp file in the same folder, then rename: a crash never leaves half a file.
    fd, tmp = tempfile.mkstemp(prefix=".clipy-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (signal 0). On Windows, where signal 0 is a Ctrl-C
    event, it is assumed to run."""
    if sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def copy_sparse(source: str | Path, target: str | Path) -> str:
    """``shutil.copy2`` that keeps a sparse file's holes: the engine preallocates its WAL and
    storage pages (the README store: 636 MB of files, 370 MB on disk), and a plain copy
    writes the holes out as zeros. Only the data extents are copied (``SEEK_DATA`` /
    ``SEEK_HOLE``; where the system lacks them, or the file system reports none, the whole
    file)."""
    if not hasattr(os, "SEEK_DATA"):
        return str(shutil.copy2(source, target))
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                data = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after offset: the rest is a hole
                    break
                raise
            hole = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            src.seek(data)
            dst.seek(data)
            remaining = hole - data
            while remaining > 0:
                chunk = src.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                remaining -= len(chunk)
            offset = hole
        dst.truncate(size)
    shutil.copystat(source, target)
    return str(target)


class EdgeStore(QdrantStore):
    """:class:`~clipy_qdrant.store.base.VectorStore` on qdrant-edge in folder ``path``.

    ``full_scan_threshold_kb`` (Qdrant's default, 10 MB): a segment or filtered subset whose
    vectors are smaller than this is searched exactly instead of through the graph. It and
    ``options`` (storage, quantization, graph) apply when the collection is created;
    ``hnsw_ef`` per search. Server-only options (shards, replicas, write consistency) raise
    :class:`StoreError` naming the option. Opening a folder another process holds open raises
    :class:`StoreError`. ``search_threads`` sizes the engine's search pool
    (:data:`DEFAULT_SEARCH_THREADS`); a shard recorded with another size is loaded with this
    one, which the engine then records in the shard.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        hnsw_ef: int = DEFAULT_HNSW_EF,
        options: CollectionOptions | None = None,
        full_scan_threshold_kb: int = DEFAULT_FULL_SCAN_THRESHOLD_KB,
        search_threads: int = DEFAULT_SEARCH_THREADS,
    ) -> None:
        if search_threads < 1:
            raise ConfigError(f"search_threads must be >= 1 (got {search_threads})")
        self.path = Path(path)
        self.search_threads = search_threads
        super().__init__(hnsw_ef=hnsw_ef)
        if options is not None:
            self.request_options(options)
        self.full_scan_threshold_kb = full_scan_threshold_kb
        self._shard: Any = None
        self._thumbnails: ThumbnailDB | None = None
        #: Whether the shard's manifest must be written when it closes (see ``_mark_written``).
        self._write_manifest = False
        #: The unfiltered count, kept while this open has written nothing (see ``_count``).
        self._total: int | None = None
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store {self.path} is a file, not a folder; choose another --store")
        # A collection is the metadata file and the shard together; metadata alone, or with a
        # shard the engine never finished creating (a creation cut short), is overwritten by
        # the next ensure_collection.
        if (self.path / META_FILE).exists() and (self.path / SHARD_DIR).exists():
            meta = self._read_meta()
            if self._shard_created():
                self._shard = self._load_shard(meta)
                self._meta = meta

    def __repr__(self) -> str:
        return f"EdgeStore({str(self.path)!r})"

    @property
    def where(self) -> str:
        return str(self.path)

    def request_options(self, options: CollectionOptions) -> None:
        """As :meth:`QdrantStore.request_options`; server-only options raise ``StoreError``."""
        refuse_server_only(options, str(self.path))
        super().request_options(options)

    def stats(self) -> dict[str, int]:
        """Engine counters: points, indexed (HNSW) vectors, segments."""
        self._live_meta()
        with self._engine("reading collection info"):
            info = self._shard.info()
        return {
            "points": int(info.points_count),
            "indexed_vectors": int(info.indexed_vectors_count),
            "segments": int(info.segments_count),
        }

    # -- opening and the folder lock ----------------------------------------------------

    def _read_meta(self) -> StoreMeta:
        try:
            data = json.loads((self.path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"store {self.path}: cannot read {META_FILE} ({exc}); recreate it with --recreate"
            ) from None
        return StoreMeta.from_json(data, str(self.path))

    def _load_shard(self, meta: StoreMeta) -> Any:
        import qdrant_edge as qe

        current = self._check_manifest()
        config = None
        if self._recorded_search_threads() != self.search_threads:
            config = edge_load_config(
                meta.options, meta.encoder.dim, self.search_threads, fused=meta.fused
            )
        try:
            shard = qe.EdgeShard.load(str(self.path / SHARD_DIR), config)
        except BaseException as exc:
            if not isinstance(exc, Exception) and not is_engine_panic(exc):
                raise
            if "WouldBlock" in str(exc):
                raise self._locked_error() from None
            raise StoreError(f"store {self.path} cannot be opened: {exc}") from None
        self._write_pid()
        # A store without a current manifest (killed while writing, written by a clipy that
        # does not keep one) gets one when it closes.
        self._write_manifest = not current
        return shard

    def _recorded_search_threads(self) -> int | None:
        """The search pool size the shard's config records (``None``: the engine's default,
        or a config this engine version does not describe)."""
        try:
            data = json.loads((self.path / SHARD_DIR / "edge_config.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        threads = data.get("max_search_threads") if isinstance(data, dict) else None
        return threads if isinstance(threads, int) else None

    def _shard_created(self) -> bool:
        """Whether the shard folder holds a shard. ``EdgeShard.create`` makes the folder, then
        writes its config and first segment: a process killed in between leaves a folder that
        the engine refuses to load ("edge config is not provided and no segments were
        loaded") and that holds no product."""
        shard = self.path / SHARD_DIR
        if (shard / "edge_config.json").exists():
            return True
        segments = shard / "segments"
        return segments.is_dir() and any(segments.iterdir())

    def _check_manifest(self) -> bool:
        """Refuse a shard whose files differ from the manifest of its last clean close,
        before the engine reads them (some damage makes the engine abort the process).
        Returns whether the manifest is current."""
        check = manifest.check_manifest(self.path, self.path / SHARD_DIR)
        damage = check.damage
        if damage is None:
            return check.current
        holder = self._pid_holder()
        if holder is not None and holder != os.getpid() and process_alive(holder):
            # Another process holds the shard and may be writing it: the engine's lock
            # error names that process, rather than a false alarm about damage.
            return False
        raise StoreError(
            f"store file {damage.path} is damaged ({damage.reason}); restore the store "
            "from a copy or re-ingest it with --recreate"
        )

    def _mark_written(self) -> None:
        """Called before every write to the shard: its manifest no longer holds, so it is
        removed (a kill from now on leaves no manifest to raise a false alarm) and written
        again when the shard closes."""
        if not self._write_manifest:
            manifest.remove_manifest(self.path)
            self._write_manifest = True

    def _locked_error(self) -> StoreError:
        """The error for a shard whose lock another open holds, naming the holder if known."""
        holder = self._pid_holder()
        if holder == os.getpid():
            return StoreError(
                f"store {self.path} is already open in this process; close the other "
                "EdgeStore on it first"
            )
        who = f" (pid {holder})" if holder is not None else ""
        return StoreError(
            f"store {self.path} is held open by another clipy process{who}, such as an ingest, "
            "search or serve; wait for it to finish or stop it, or use another --store folder"
        )

    def _pid_holder(self) -> int | None:
        try:
            return int((self.path / PID_FILE).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def _write_pid(self) -> None:
        # Only a hint for the lock error: failing to write it must not fail the open.
        with contextlib.suppress(OSError):
            (self.path / PID_FILE).write_text(f"{os.getpid()}\n", encoding="ascii")

    def _release_shard(self) -> None:
        self._total = None
        if self._thumbnails is not None:
            self._thumbnails.close()
            self._thumbnails = None
        if self._shard is None:
            return
        shard, self._shard = self._shard, None
        try:
            # Every write marks the shard written first (``_mark_written``): a shard this
            # process only read has nothing to flush, and a one-shot query skips a round of
            # msync/fsync calls (the engine's close syncs its files either way).
            if self._write_manifest:
                shard.flush()
            shard.close()
            if self._write_manifest:
                manifest.write_manifest(self.path, self.path / SHARD_DIR)
                self._write_manifest = False
        finally:
            if self._pid_holder() == os.getpid():
                (self.path / PID_FILE).unlink(missing_ok=True)

    # -- engine calls -------------------------------------------------------------------

    def _create_collection(self, meta: StoreMeta) -> None:
        import qdrant_edge as qe

        if self._shard_created():
            raise StoreError(
                f"store {self.path} has a shard but no {META_FILE}; delete the folder "
                "or use --recreate"
            )
        # A shard folder the engine never finished creating holds nothing: start it again.
        shutil.rmtree(self.path / SHARD_DIR, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        self._mark_written()
        # Metadata first: a shard is never left behind without knowing its encoder.
        _write_json_atomic(self.path / META_FILE, meta.to_json())
        config = edge_config(
            meta.options,
            meta.encoder.dim,
            self.full_scan_threshold_kb,
            lexical=meta.lexical,
            fused=meta.fused,
            search_threads=self.search_threads,
        )
        self._shard = qe.EdgeShard.create(str(self.path / SHARD_DIR), config)
        self._write_pid()

    def _write_meta(self, meta: StoreMeta) -> None:
        _write_json_atomic(self.path / META_FILE, meta.to_json())

    def _drop_collection(self) -> None:
        self._write_manifest = False  # nothing to record: the shard is deleted
        self._release_shard()
        manifest.remove_manifest(self.path)
        shutil.rmtree(self.path / SHARD_DIR, ignore_errors=True)
        (self.path / THUMBNAIL_FILE).unlink(missing_ok=True)
        (self.path / VOCABULARY_FILE).unlink(missing_ok=True)
        (self.path / META_FILE).unlink(missing_ok=True)

    def _create_payload_indexes(self, fields: Mapping[str, str]) -> None:
        import qdrant_edge as qe

        self._mark_written()
        for name, kind in fields.items():
            schema = getattr(qe.PayloadSchemaType, _SCHEMA_NAMES[kind])
            self._shard.update(qe.UpdateOperation.create_field_index(name, schema))

    def _read_indexed_fields(self) -> dict[str, str]:
        names = {v: k for k, v in _SCHEMA_NAMES.items()}
        out: dict[str, str] = {}
        for name, info in self._shard.info().payload_schema.items():
            kind = str(info.data_type).rpartition(".")[2]
            out[str(name)] = names.get(kind, kind.lower())
        return out

    def _upsert_points(self, points: Sequence[EnginePoint]) -> None:
        import qdrant_edge as qe

        self._mark_written()
        batch = []
        for p in points:
            vectors: dict[str, Any] = dict(p.vectors)
            if p.lexical:
                vectors[LEXICAL] = qe.SparseVector(
                    indices=list(p.lexical.indices), values=list(p.lexical.values)
                )
            batch.append(qe.Point(p.id, vectors, p.payload))
        self._shard.update(qe.UpdateOperation.upsert_points(batch))

    def _update_vectors(self, name: str, rows: Sequence[tuple[str, np.ndarray]]) -> None:
        import qdrant_edge as qe

        self._mark_written()
        points = [qe.PointVectors(pid, {name: vector.tolist()}) for pid, vector in rows]
        self._shard.update(qe.UpdateOperation.update_vectors(points))

    def _set_payloads(self, key: str, targets: Sequence[tuple[Any, list[str]]]) -> None:
        import qdrant_edge as qe

        self._mark_written()
        for value, ids in targets:
            point_ids: list[int | uuid.UUID | str] = list(ids)
            self._shard.update(qe.UpdateOperation.set_payload(point_ids, {key: value}))

    def _search(self, search: EngineSearch) -> Sequence[Any]:
        import qdrant_edge as qe

        request = qe.SearchRequest(
            query=qe.Query.Nearest(search.query, using=search.using),  # type: ignore[arg-type]
            limit=search.limit,
            filter=search.filter,
            params=edge_search_params(self.options, search.ef, search.exact),
            with_payload=search.payload,
        )
        return self._shard.search(request)

    def _search_sparse(self, query: SparseTerms, limit: int, flt: Any) -> Sequence[Any]:
        import qdrant_edge as qe

        vector = qe.SparseVector(indices=list(query.indices), values=list(query.values))
        request = qe.QueryRequest(
            query=qe.Query.Nearest(vector, using=LEXICAL),
            limit=limit,
            filter=flt,
            with_payload=False,
        )
        return self._shard.query(request)

    def _read_vocabulary(self) -> dict[str, Any] | None:
        path = self.path / VOCABULARY_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None

    def _write_vocabulary(self, data: dict[str, Any]) -> None:
        _write_json_atomic(self.path / VOCABULARY_FILE, data)

    def _retrieve(
        self, ids: list[str], *, payload: Selector, with_vectors: Selector
    ) -> Sequence[Any]:
        return self._shard.retrieve(ids, payload, with_vectors)

    def _scroll_page(
        self, offset: Any, limit: int, *, with_vectors: Selector, payload: Selector
    ) -> tuple[list[Any], Any]:
        import qdrant_edge as qe

        request = qe.ScrollRequest(
            offset=offset, limit=limit, with_payload=payload, with_vector=with_vectors
        )
        records, next_offset = self._shard.scroll(request)
        return list(records), next_offset

    def _count(self, flt: Any) -> int:
        import qdrant_edge as qe

        # Counts are exact: the engine's inexact count sums its segments' live points, and a
        # shard reloaded after a kill can hold a point in two segments until it is optimized
        # (counted twice). An exact count walks every point (milliseconds on the full
        # catalog), so the unfiltered one is kept while this open has written nothing: the
        # folder lock keeps other processes from writing, so it stays true (a serving store).
        if flt is not None or self._write_manifest:
            return int(self._shard.count(qe.CountRequest(exact=True, filter=flt)))
        if self._total is None:
            self._total = int(self._shard.count(qe.CountRequest(exact=True)))
        return self._total

    def _facet(self, key: str, flt: Any, limit: int) -> Sequence[Any]:
        import qdrant_edge as qe

        request = qe.FacetRequest(key, limit=limit, exact=True, filter=flt)
        return list(self._shard.facet(request).hits)

    def _build_index(self) -> None:
        self._mark_written()
        self._shard.optimize()

    def _close_engine(self) -> None:
        self._release_shard()

    # -- shard snapshots: a whole store to another folder with its HNSW graphs ----------------

    def write_snapshot(self, archive: Path) -> None:
        """Write the flushed shard (segments with their HNSW graphs and payload indexes, and
        the WAL) as the tar ``archive`` that :meth:`restore_snapshot` reads."""
        import tarfile

        self._live_meta()
        with self._engine("writing a snapshot"):
            self._shard.flush()
            with tarfile.open(archive, "w") as tar:
                tar.add(self.path / SHARD_DIR, arcname=".")

    def restore_snapshot(self, archive: Path, meta: StoreMeta) -> None:
        """Create this store's collection from ``archive`` (:meth:`write_snapshot`, read by
        qdrant-edge's ``unpack_snapshot``), recorded with ``meta``. The store must have no
        collection; the shard keeps the layout it was written with."""
        import qdrant_edge as qe

        self._check_open()
        if self._meta is not None or (self.path / SHARD_DIR).exists():
            raise StoreError(
                f"store {self.path} already has a collection; restore into a new folder"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self._mark_written()
        # Metadata first, as at creation: a shard is never left without its encoder.
        _write_json_atomic(self.path / META_FILE, meta.to_json())
        with self._engine("restoring a snapshot"):
            qe.EdgeShard.unpack_snapshot(str(archive), str(self.path / SHARD_DIR))
        self._shard = self._load_shard(meta)
        self._meta = meta

    def replicate(self, target: str | Path) -> Path:
        """Copy this store as it is now into the new folder ``target``: a replica that another
        process opens as a store of its own (``clipy serve --workers``: one per worker but the
        first, which opens this store). The shard is flushed and copied file by file, as
        :meth:`write_snapshot` archives it; the thumbnails go through SQLite's backup; the
        lock holder's pid file stays behind. The copy holds what is written so far: while this
        store is open no other process writes to it. A
        failed copy leaves no folder and raises :class:`StoreError`."""
        target = Path(target)
        self._live_meta()
        if target.exists():
            raise StoreError(f"cannot copy store {self.path} to {target}: it already exists")
        try:
            with self._engine("flushing for a copy"):
                self._shard.flush()
            target.mkdir(parents=True)
            for entry in sorted(self.path.iterdir()):
                if entry.name == PID_FILE or entry.name.startswith(THUMBNAIL_FILE):
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, target / entry.name, copy_function=copy_sparse)
                else:
                    copy_sparse(entry, target / entry.name)
            if (self.path / THUMBNAIL_FILE).exists():
                self._thumbnail_db().backup_to(target / THUMBNAIL_FILE)
        except (OSError, StoreError) as exc:
            shutil.rmtree(target, ignore_errors=True)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise StoreError(f"cannot copy store {self.path} to {target}: {reason}") from None
        return target

    # -- thumbnails (a sqlite file beside the shard) ------------------------------------------

    def _thumbnail_db(self) -> ThumbnailDB:
        if self._thumbnails is None:
            self._thumbnails = ThumbnailDB(self.path / THUMBNAIL_FILE)
        return self._thumbnails

    def _write_thumbnails(self, thumbnails: Mapping[str, Thumbnail]) -> None:
        self._thumbnail_db().put(thumbnails)

    def _read_thumbnail(self, product_id: str) -> Thumbnail | None:
        if not (self.path / THUMBNAIL_FILE).exists():
            return None
        return self._thumbnail_db().get(product_id)

    # -- filter leaves ------------------------------------------------------------------

    def _match_value(self, key: str, value: Scalar) -> Any:
        import qdrant_edge as qe

        return qe.FieldCondition(key, match=qe.MatchValue(value))  # type: ignore[arg-type]

    def _match_any(self, key: str, values: list[Any]) -> Any:
        import qdrant_edge as qe

        return qe.FieldCondition(key, match=qe.MatchAny(values))

    def _match_range(self, cond: Range) -> Any:
        import qdrant_edge as qe

        bounds = qe.RangeFloat(gt=cond.gt, gte=cond.gte, lt=cond.lt, lte=cond.lte)
        return qe.FieldCondition(cond.field, range=bounds)

    def _bool_filter(
        self, *, must: Conditions = None, must_not: Conditions = None, should: Conditions = None
    ) -> Any:
        import qdrant_edge as qe

        return qe.Filter(must=must, must_not=must_not, should=should)
