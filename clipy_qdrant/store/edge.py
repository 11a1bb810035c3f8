"""Embedded store: Qdrant's own engine in-process (qdrant-edge-py), one folder per collection.

Layout of the store folder::

    <path>/clipy.json   encoder (name, dim) and payload indexes, written atomically
    <path>/shard/       the qdrant-edge shard (segments + WAL); locked by the process using it
    <path>/thumbnails.sqlite   product thumbnails (:class:`~clipy_qdrant.thumbnails.ThumbnailDB`)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.errors import StoreError
from clipy_qdrant.filters import Filter, Match, Range
from clipy_qdrant.store._common import (
    DEFAULT_HNSW_EF,
    DEFAULT_HNSW_EF_CONSTRUCT,
    DEFAULT_HNSW_M,
    FACET_FETCH,
    UPSERT_BATCH,
    StoreMeta,
    check_field_types,
    check_same_encoder,
    group_by_value,
    match_parts,
    mismatch_error,
    payload_of,
    query_vector,
    sorted_facet,
    stored_vectors,
    vectors_of,
)
from clipy_qdrant.store.base import (
    CONTENT_HASH_KEY,
    PRODUCT_ID_KEY,
    VECTOR_NAMES,
    FieldType,
    HubnessInfo,
    PointRecord,
    ScoredPoint,
    StoredPoint,
    Thumbnail,
    point_id,
)
from clipy_qdrant.thumbnails import ThumbnailDB

META_FILE = "clipy.json"
SHARD_DIR = "shard"
THUMBNAIL_FILE = "thumbnails.sqlite"

#: Qdrant's default: below ~10 MB of vectors a scan beats the graph.
DEFAULT_FULL_SCAN_THRESHOLD_KB = 10_000

#: Payload index types; the product id is always indexed so lookups by id filter fast.
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


class EdgeStore:
    """:class:`~clipy_qdrant.store.base.VectorStore` on qdrant-edge in folder ``path``.

    ``hnsw_m`` / ``hnsw_ef_construct`` shape the graph built by :meth:`build_index`;
    ``hnsw_ef`` is the search-time beam width (higher: better recall, slower).
    ``full_scan_threshold_kb`` (Qdrant's default, 10 MB): a segment or filtered subset whose
    vectors are smaller than this is searched exactly instead of through the graph.
    The three graph settings apply when the collection is created; ``hnsw_ef`` per search.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        hnsw_ef: int = DEFAULT_HNSW_EF,
        hnsw_m: int = DEFAULT_HNSW_M,
        hnsw_ef_construct: int = DEFAULT_HNSW_EF_CONSTRUCT,
        full_scan_threshold_kb: int = DEFAULT_FULL_SCAN_THRESHOLD_KB,
    ) -> None:
        self.path = Path(path)
        self.full_scan_threshold_kb = full_scan_threshold_kb
        self.hnsw_ef = hnsw_ef
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construct = hnsw_ef_construct
        self._shard: Any = None
        self._meta: StoreMeta | None = None
        self._closed = False
        self._thumbnails: ThumbnailDB | None = None
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store {self.path} is a file, not a folder; choose another --store")
        meta_file = self.path / META_FILE
        if meta_file.exists():
            self._meta = self._read_meta(meta_file)
            if (self.path / SHARD_DIR).exists():
                self._shard = self._load_shard()

    # -- opening ------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"EdgeStore({str(self.path)!r})"

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_meta(self, meta_file: Path) -> StoreMeta:
        try:
            data = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"store {self.path}: cannot read {META_FILE} ({exc}); recreate it with --recreate"
            ) from None
        return StoreMeta.from_json(data, str(self.path))

    def _load_shard(self) -> Any:
        import qdrant_edge

        try:
            return qdrant_edge.EdgeShard.load(str(self.path / SHARD_DIR))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreError(
                    f"store {self.path} is in use by another process (or already open in this "
                    "one); stop it (e.g. a running `clipy serve`) or use another --store folder"
                ) from None
            raise StoreError(f"store {self.path} cannot be opened: {exc}") from None

    def _config(self, dim: int) -> Any:
        import qdrant_edge as qe

        vector = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)
        return qe.EdgeConfig(
            vectors={name: vector for name in VECTOR_NAMES},
            hnsw_config=qe.HnswIndexConfig(
                m=self.hnsw_m,
                ef_construct=self.hnsw_ef_construct,
                # Below this many KB of (matching) vectors a search scans instead of walking
                # the graph: exact and as fast at that size.
                full_scan_threshold=self.full_scan_threshold_kb,
            ),
            # Edge has no background optimizer: HNSW is built only by build_index(). A tiny
            # threshold makes that call index every segment, whatever the collection size.
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
        )

    def _live_shard(self) -> Any:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        if self._shard is None:
            raise StoreError(f"store {self.path} has no collection yet; run `clipy ingest` first")
        return self._shard

    @contextmanager
    def _engine(self, what: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"store {self.path}: {what} failed: {exc}") from None

    # -- collection ---------------------------------------------------------------------

    def ensure_collection(
        self, encoder: EncoderInfo, indexed_fields: Mapping[str, FieldType] | None = None
    ) -> None:
        """Create the shard for ``encoder`` (and payload indexes) or check the existing one."""
        import qdrant_edge as qe

        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        fields = check_field_types(indexed_fields)
        if self._meta is not None and self._shard is not None:
            stored = self._meta.encoder
            if stored.name != encoder.name or stored.dim != encoder.dim:
                raise mismatch_error(str(self.path), stored, encoder)
        else:
            if (self.path / SHARD_DIR).exists():
                raise StoreError(
                    f"store {self.path} has a shard but no {META_FILE}; delete the folder "
                    "or use --recreate"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            self._meta = StoreMeta(encoder, {})
            # Metadata first: a shard is never left behind without knowing its encoder.
            _write_json_atomic(self.path / META_FILE, self._meta.to_json())
            with self._engine("creating the collection"):
                self._shard = qe.EdgeShard.create(
                    str(self.path / SHARD_DIR), self._config(encoder.dim)
                )
        wanted = {PRODUCT_ID_KEY: "keyword", **fields}
        missing = {k: v for k, v in wanted.items() if self._meta.indexed_fields.get(k) != v}
        if missing:
            with self._engine("creating payload indexes"):
                for name, kind in missing.items():
                    schema = getattr(qe.PayloadSchemaType, _SCHEMA_NAMES[kind])
                    self._shard.update(qe.UpdateOperation.create_field_index(name, schema))
            self._meta.indexed_fields.update(missing)
            _write_json_atomic(self.path / META_FILE, self._meta.to_json())

    def encoder_info(self) -> EncoderInfo | None:
        return self._meta.encoder if self._meta is not None and self._shard is not None else None

    def check_encoder(self, encoder: EncoderInfo) -> None:
        check_same_encoder(str(self.path), self.encoder_info(), encoder)

    def delete_collection(self) -> None:
        """Remove the collection (shard and metadata); :meth:`ensure_collection` starts afresh."""
        if self._shard is not None:
            with self._engine("closing"):
                self._shard.close()
            self._shard = None
        if self._thumbnails is not None:
            self._thumbnails.close()
            self._thumbnails = None
        shutil.rmtree(self.path / SHARD_DIR, ignore_errors=True)
        (self.path / THUMBNAIL_FILE).unlink(missing_ok=True)
        (self.path / META_FILE).unlink(missing_ok=True)
        self._meta = None

    def indexed_fields(self) -> dict[str, str]:
        """Payload indexes as the engine reports them: ``{field: type}``."""
        shard = self._live_shard()
        with self._engine("reading collection info"):
            schema = shard.info().payload_schema
        names = {v: k for k, v in _SCHEMA_NAMES.items()}
        out: dict[str, str] = {}
        for name, info in schema.items():
            kind = str(info.data_type).rpartition(".")[2]
            out[str(name)] = names.get(kind, kind.lower())
        return out

    def stats(self) -> dict[str, int]:
        """Engine counters: points, indexed (HNSW) vectors, segments."""
        shard = self._live_shard()
        with self._engine("reading collection info"):
            info = shard.info()
        return {
            "points": int(info.points_count),
            "indexed_vectors": int(info.indexed_vectors_count),
            "segments": int(info.segments_count),
        }

    # -- writing ------------------------------------------------------------------------

    def upsert(self, points: Sequence[PointRecord]) -> None:
        import qdrant_edge as qe

        shard = self._live_shard()
        assert self._meta is not None
        dim = self._meta.encoder.dim
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                qe.Point(point_id(p.product_id), vectors_of(p, dim), payload_of(p))  # type: ignore[arg-type]
                for p in points[start : start + UPSERT_BATCH]
            ]
            with self._engine("upsert"):
                shard.update(qe.UpdateOperation.upsert_points(batch))

    def set_payload(self, key: str, values: Mapping[str, Any]) -> None:
        import qdrant_edge as qe

        shard = self._live_shard()
        for value, product_ids in group_by_value(values).items():
            with self._engine(f"setting payload {key!r}"):
                for start in range(0, len(product_ids), UPSERT_BATCH):
                    ids: list[int | uuid.UUID | str] = [
                        point_id(p) for p in product_ids[start : start + UPSERT_BATCH]
                    ]
                    shard.update(qe.UpdateOperation.set_payload(ids, {key: value}))

    def hubness_info(self) -> HubnessInfo | None:
        return self._meta.hubness if self._meta is not None else None

    def set_hubness_info(self, info: HubnessInfo | None) -> None:
        self._live_shard()
        assert self._meta is not None
        if self._meta.hubness != info:
            self._meta.hubness = info
            _write_json_atomic(self.path / META_FILE, self._meta.to_json())

    def build_index(self) -> None:
        """Build HNSW for every segment (blocking; minutes at catalog scale)."""
        shard = self._live_shard()
        with self._engine("building the index"):
            shard.optimize()

    # -- reading ------------------------------------------------------------------------

    def _filter(self, flt: Filter | None) -> Any:
        import qdrant_edge as qe

        if not flt:
            return None

        def part(name: str, kind: str, value: Any) -> Any:
            if kind == "equal":
                return qe.FieldCondition(name, range=qe.RangeFloat(gte=value, lte=value))
            if kind == "any":
                return qe.FieldCondition(name, match=qe.MatchAny(value))
            return qe.FieldCondition(name, match=qe.MatchValue(value))

        def cond(c: Match | Range) -> Any:
            if isinstance(c, Range):
                return qe.FieldCondition(
                    c.field, range=qe.RangeFloat(gte=c.gte, gt=c.gt, lte=c.lte, lt=c.lt)
                )
            parts = [part(c.field, kind, value) for kind, value in match_parts(c.values)]
            return parts[0] if len(parts) == 1 else qe.Filter(should=parts)

        return qe.Filter(
            must=[cond(c) for c in flt.must] or None,
            must_not=[cond(c) for c in flt.must_not] or None,
        )

    def search(
        self,
        using: str,
        vector: np.ndarray,
        limit: int,
        flt: Filter | None = None,
        *,
        with_payload: bool = True,
        exact: bool = False,
    ) -> list[ScoredPoint]:
        import qdrant_edge as qe

        shard = self._live_shard()
        assert self._meta is not None
        query = query_vector(vector, self._meta.encoder.dim, using)
        if limit <= 0:
            return []
        request = qe.SearchRequest(
            query=qe.Query.Nearest(query, using=using),  # type: ignore[arg-type]
            limit=int(limit),
            filter=self._filter(flt),
            params=qe.SearchParams(hnsw_ef=self.hnsw_ef, exact=exact),
            # The product id lives in the payload, so it is always read.
            with_payload=True,
        )
        with self._engine("search"):
            hits = shard.search(request)
        return [
            ScoredPoint(
                str(h.payload[PRODUCT_ID_KEY]),
                float(h.score),
                dict(h.payload) if with_payload else None,
            )
            for h in hits
        ]

    def retrieve(
        self, product_ids: Sequence[str], *, with_payload: bool = True, with_vectors: bool = False
    ) -> list[StoredPoint]:
        shard = self._live_shard()
        if not product_ids:
            return []
        ids = [point_id(p) for p in product_ids]
        with self._engine("retrieve"):
            records = shard.retrieve(ids, True, with_vectors)
        return [self._stored(r, with_payload, with_vectors) for r in records]

    @staticmethod
    def _stored(record: Any, with_payload: bool, with_vectors: bool) -> StoredPoint:
        payload = dict(record.payload or {})
        return StoredPoint(
            str(payload.get(PRODUCT_ID_KEY)),
            payload if with_payload else {},
            stored_vectors(record.vector) if with_vectors else {},
        )

    def content_hashes(self, product_ids: Sequence[str]) -> dict[str, str]:
        return {
            p.product_id: str(p.payload.get(CONTENT_HASH_KEY, ""))
            for p in self.retrieve(product_ids, with_payload=True)
        }

    def scroll(
        self, *, with_vectors: bool = False, batch_size: int = 1000
    ) -> Iterator[StoredPoint]:
        import qdrant_edge as qe

        shard = self._live_shard()
        offset = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=batch_size, with_payload=True, with_vector=with_vectors
            )
            with self._engine("scroll"):
                records, offset = shard.scroll(request)
            for r in records:
                yield self._stored(r, True, with_vectors)
            if offset is None or not records:
                return

    def count(self, flt: Filter | None = None) -> int:
        import qdrant_edge as qe

        if self._shard is None and not self._closed:
            return 0
        shard = self._live_shard()
        with self._engine("count"):
            return int(shard.count(qe.CountRequest(exact=True, filter=self._filter(flt))))

    def facet(
        self, key: str, flt: Filter | None = None, limit: int = 20
    ) -> list[tuple[str | int | bool, int]]:
        import qdrant_edge as qe

        shard = self._live_shard()
        request = qe.FacetRequest(
            key, limit=max(limit, FACET_FETCH), exact=True, filter=self._filter(flt)
        )
        with self._engine(f"facet on {key!r}"):
            hits = shard.facet(request).hits
        return sorted_facet([(h.value, h.count) for h in hits], limit)

    def _thumbnail_db(self) -> ThumbnailDB:
        self._live_shard()
        if self._thumbnails is None:
            self._thumbnails = ThumbnailDB(self.path / THUMBNAIL_FILE)
        return self._thumbnails

    def put_thumbnails(self, thumbnails: Mapping[str, Thumbnail]) -> None:
        if thumbnails:
            self._thumbnail_db().put(thumbnails)

    def thumbnail(self, product_id: str) -> Thumbnail | None:
        if not (self.path / THUMBNAIL_FILE).exists():
            self._live_shard()
            return None
        return self._thumbnail_db().get(product_id)

    def close(self) -> None:
        """Flush and release the folder lock; safe to call twice."""
        if self._thumbnails is not None:
            self._thumbnails.close()
            self._thumbnails = None
        if self._shard is not None:
            shard, self._shard = self._shard, None
            with self._engine("closing"):
                shard.flush()
                shard.close()
        self._closed = True
