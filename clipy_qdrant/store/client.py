"""Store on qdrant-client: a Qdrant server (``http://…``) or the in-memory local mode (``:memory:``).

The encoder and the declared payload indexes are kept in the collection's own metadata
(``metadata={"clipy": …}``), so nothing extra shows up in searches or counts.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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
    THUMBNAIL_KEY,
    VECTOR_NAMES,
    FieldType,
    HubnessInfo,
    PointRecord,
    ScoredPoint,
    StoredPoint,
    Thumbnail,
    point_id,
)
from clipy_qdrant.thumbnails import from_payload, to_payload

META_KEY = "clipy"


def _without_thumbnail() -> Any:
    """Payload selector of every key but the thumbnail (kept out of search and scroll results)."""
    from qdrant_client import models

    return models.PayloadSelectorExclude(exclude=[THUMBNAIL_KEY])


class ClientStore:
    """:class:`~clipy_qdrant.store.base.VectorStore` over qdrant-client.

    ``url=":memory:"`` uses qdrant-client's local mode (brute force; for tests), anything else
    is a server URL. ``hnsw_ef`` is the search-time beam width on a server.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        collection: str = "products",
        *,
        hnsw_ef: int = DEFAULT_HNSW_EF,
        hnsw_m: int = DEFAULT_HNSW_M,
        hnsw_ef_construct: int = DEFAULT_HNSW_EF_CONSTRUCT,
        timeout: int = 60,
    ) -> None:
        from qdrant_client import QdrantClient

        self.url = url
        self.collection = collection
        self.hnsw_ef = hnsw_ef
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construct = hnsw_ef_construct
        self.local = url == ":memory:"
        self._meta: StoreMeta | None = None
        self._closed = False
        self._client = (
            QdrantClient(":memory:")
            if self.local
            else QdrantClient(url=url, api_key=api_key, timeout=timeout)
        )
        self._meta = self._read_meta()

    def __repr__(self) -> str:
        return f"ClientStore({self.url!r}, collection={self.collection!r})"

    def __enter__(self) -> ClientStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return f"{self.url} collection {self.collection!r}"

    @contextmanager
    def _engine(self, what: str) -> Iterator[None]:
        if self._closed:
            raise StoreError(f"store {self.where} is closed")
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            hint = "" if self.local else " (is the server running? `docker compose up -d`)"
            raise StoreError(f"store {self.where}: {what} failed: {exc}{hint}") from None

    def _read_meta(self) -> StoreMeta | None:
        with self._engine("reading the collection"):
            if not self._client.collection_exists(self.collection):
                return None
            info = self._client.get_collection(self.collection)
        data = (info.config.metadata or {}).get(META_KEY)
        if not isinstance(data, Mapping):
            raise StoreError(
                f"collection {self.collection!r} at {self.url} was not created by clipy; "
                "choose another --collection or --recreate"
            )
        return StoreMeta.from_json(data, self.where)

    def _live_meta(self) -> StoreMeta:
        if self._meta is None:
            raise StoreError(f"store {self.where} has no collection yet; run `clipy ingest` first")
        return self._meta

    # -- collection ---------------------------------------------------------------------

    def ensure_collection(
        self, encoder: EncoderInfo, indexed_fields: Mapping[str, FieldType] | None = None
    ) -> None:
        from qdrant_client import models

        fields = check_field_types(indexed_fields)
        if self._meta is not None:
            if self._meta.encoder.name != encoder.name or self._meta.encoder.dim != encoder.dim:
                raise mismatch_error(self.where, self._meta.encoder, encoder)
        else:
            meta = StoreMeta(encoder, {})
            vector = models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
            with self._engine("creating the collection"):
                self._client.create_collection(
                    self.collection,
                    vectors_config={name: vector for name in VECTOR_NAMES},
                    hnsw_config=models.HnswConfigDiff(
                        m=self.hnsw_m, ef_construct=self.hnsw_ef_construct
                    ),
                    metadata={META_KEY: meta.to_json()},
                )
            self._meta = meta
        wanted = {PRODUCT_ID_KEY: "keyword", **fields}
        missing = {k: v for k, v in wanted.items() if self._meta.indexed_fields.get(k) != v}
        if missing:
            with self._engine("creating payload indexes"), warnings.catch_warnings():
                # Local mode accepts indexes and warns that they have no effect: expected here.
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                for name, kind in missing.items():
                    self._client.create_payload_index(
                        self.collection, name, models.PayloadSchemaType(kind), wait=True
                    )
            self._meta.indexed_fields.update(missing)
            with self._engine("saving collection metadata"):
                self._client.update_collection(
                    self.collection, metadata={META_KEY: self._meta.to_json()}
                )

    def encoder_info(self) -> EncoderInfo | None:
        return self._meta.encoder if self._meta is not None else None

    def check_encoder(self, encoder: EncoderInfo) -> None:
        check_same_encoder(self.where, self.encoder_info(), encoder)

    def delete_collection(self) -> None:
        """Drop the collection; :meth:`ensure_collection` starts afresh."""
        with self._engine("deleting the collection"):
            if self._client.collection_exists(self.collection):
                self._client.delete_collection(self.collection)
        self._meta = None

    def indexed_fields(self) -> dict[str, str]:
        """Payload indexes: the server's schema, or the declared ones in local mode (which
        ignores indexes)."""
        meta = self._live_meta()
        if self.local:
            return dict(meta.indexed_fields)
        with self._engine("reading collection info"):
            schema = self._client.get_collection(self.collection).payload_schema
        return {
            name: str(getattr(info.data_type, "value", info.data_type))
            for name, info in schema.items()
        }

    # -- writing ------------------------------------------------------------------------

    def upsert(self, points: Sequence[PointRecord]) -> None:
        from qdrant_client import models

        dim = self._live_meta().encoder.dim
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                models.PointStruct(
                    id=point_id(p.product_id),
                    vector={k: v.tolist() for k, v in vectors_of(p, dim).items()},
                    payload=payload_of(p),
                )
                for p in points[start : start + UPSERT_BATCH]
            ]
            with self._engine("upsert"):
                self._client.upsert(self.collection, batch, wait=True)

    def set_payload(self, key: str, values: Mapping[str, Any]) -> None:
        from qdrant_client import models

        self._live_meta()
        operations = [
            models.SetPayloadOperation(
                set_payload=models.SetPayload(
                    payload={key: value},
                    points=[point_id(p) for p in product_ids[start : start + UPSERT_BATCH]],
                )
            )
            for value, product_ids in group_by_value(values).items()
            for start in range(0, len(product_ids), UPSERT_BATCH)
        ]
        for start in range(0, len(operations), 64):
            with self._engine(f"setting payload {key!r}"):
                self._client.batch_update_points(
                    self.collection, operations[start : start + 64], wait=True
                )

    def hubness_info(self) -> HubnessInfo | None:
        return self._meta.hubness if self._meta is not None else None

    def set_hubness_info(self, info: HubnessInfo | None) -> None:
        meta = self._live_meta()
        if meta.hubness != info:
            meta.hubness = info
            with self._engine("saving collection metadata"):
                self._client.update_collection(self.collection, metadata={META_KEY: meta.to_json()})

    def build_index(self, timeout_s: float = 3600.0) -> None:
        """Wait for the server's optimizer to finish indexing (local mode: nothing to do)."""
        from qdrant_client import models

        self._live_meta()
        if self.local:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            with self._engine("reading collection status"):
                status = self._client.get_collection(self.collection).status
            if status == models.CollectionStatus.GREEN:
                return
            if time.monotonic() > deadline:
                raise StoreError(
                    f"store {self.where}: index still building after {timeout_s:.0f} s "
                    f"(status {status}); wait and check the server"
                )
            time.sleep(1.0)

    # -- reading ------------------------------------------------------------------------

    @staticmethod
    def _filter(flt: Filter | None) -> Any:
        from qdrant_client import models

        if not flt:
            return None

        def part(name: str, kind: str, value: Any) -> models.FieldCondition:
            if kind == "equal":
                return models.FieldCondition(key=name, range=models.Range(gte=value, lte=value))
            if kind == "any":
                return models.FieldCondition(key=name, match=models.MatchAny(any=value))
            return models.FieldCondition(key=name, match=models.MatchValue(value=value))

        def cond(c: Match | Range) -> models.FieldCondition | models.Filter:
            if isinstance(c, Range):
                return models.FieldCondition(
                    key=c.field, range=models.Range(gt=c.gt, gte=c.gte, lt=c.lt, lte=c.lte)
                )
            parts = [part(c.field, kind, value) for kind, value in match_parts(c.values)]
            return parts[0] if len(parts) == 1 else models.Filter(should=list(parts))

        return models.Filter(
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
        from qdrant_client import models

        meta = self._live_meta()
        query = query_vector(vector, meta.encoder.dim, using)
        if limit <= 0:
            return []
        with self._engine("search"):
            hits = self._client.query_points(
                self.collection,
                query=query.tolist(),
                using=using,
                query_filter=self._filter(flt),
                # Local mode is always exact and warns about search params, so send none there.
                search_params=None
                if self.local
                else models.SearchParams(hnsw_ef=self.hnsw_ef, exact=exact),
                limit=int(limit),
                # The product id lives in the payload, so it is always read.
                with_payload=_without_thumbnail() if with_payload else [PRODUCT_ID_KEY],
            ).points
        return [
            ScoredPoint(
                str((h.payload or {})[PRODUCT_ID_KEY]),
                float(h.score),
                dict(h.payload or {}) if with_payload else None,
            )
            for h in hits
        ]

    @staticmethod
    def _stored(record: Any, with_payload: bool, with_vectors: bool) -> StoredPoint:
        payload = dict(record.payload or {})
        return StoredPoint(
            str(payload.get(PRODUCT_ID_KEY)),
            payload if with_payload else {},
            stored_vectors(record.vector) if with_vectors else {},
        )

    def retrieve(
        self, product_ids: Sequence[str], *, with_payload: bool = True, with_vectors: bool = False
    ) -> list[StoredPoint]:
        self._live_meta()
        if not product_ids:
            return []
        with self._engine("retrieve"):
            records = self._client.retrieve(
                self.collection,
                [point_id(p) for p in product_ids],
                with_payload=_without_thumbnail(),
                with_vectors=with_vectors,
            )
        return [self._stored(r, with_payload, with_vectors) for r in records]

    def content_hashes(self, product_ids: Sequence[str]) -> dict[str, str]:
        self._live_meta()
        if not product_ids:
            return {}
        with self._engine("retrieve"):
            records = self._client.retrieve(
                self.collection,
                [point_id(p) for p in product_ids],
                with_payload=[PRODUCT_ID_KEY, CONTENT_HASH_KEY],
            )
        return {
            str(r.payload[PRODUCT_ID_KEY]): str(r.payload.get(CONTENT_HASH_KEY, ""))
            for r in records
            if r.payload
        }

    def scroll(
        self, *, with_vectors: bool = False, batch_size: int = 1000
    ) -> Iterator[StoredPoint]:
        self._live_meta()
        offset: Any = None
        while True:
            with self._engine("scroll"):
                records, offset = self._client.scroll(
                    self.collection,
                    limit=batch_size,
                    offset=offset,
                    with_payload=_without_thumbnail(),
                    with_vectors=with_vectors,
                )
            for r in records:
                yield self._stored(r, True, with_vectors)
            if offset is None or not records:
                return

    def count(self, flt: Filter | None = None) -> int:
        if self._meta is None:
            return 0
        with self._engine("count"):
            return int(
                self._client.count(
                    self.collection, count_filter=self._filter(flt), exact=True
                ).count
            )

    def facet(
        self, key: str, flt: Filter | None = None, limit: int = 20
    ) -> list[tuple[str | int | bool, int]]:
        self._live_meta()
        with self._engine(f"facet on {key!r}"):
            hits = self._client.facet(
                self.collection,
                key,
                facet_filter=self._filter(flt),
                limit=max(limit, FACET_FETCH),
                exact=True,
            ).hits
        return sorted_facet([(h.value, h.count) for h in hits], limit)

    def put_thumbnails(self, thumbnails: Mapping[str, Thumbnail]) -> None:
        """Thumbnails go into the payload (base64, key ``thumbnail``); a point is rewritten
        only when its stored thumbnail was made from other content."""
        from qdrant_client import models

        if not thumbnails:
            return
        self._live_meta()
        ids = list(thumbnails)
        with self._engine("retrieve"):
            records = self._client.retrieve(
                self.collection,
                [point_id(p) for p in ids],
                with_payload=models.PayloadSelectorInclude(
                    include=[PRODUCT_ID_KEY, f"{THUMBNAIL_KEY}.content_hash"]
                ),
            )
        stored = {
            str(r.payload[PRODUCT_ID_KEY]): (r.payload.get(THUMBNAIL_KEY) or {}).get("content_hash")
            for r in records
            if r.payload
        }
        operations = [
            models.SetPayloadOperation(
                set_payload=models.SetPayload(
                    payload={THUMBNAIL_KEY: to_payload(thumb)}, points=[point_id(pid)]
                )
            )
            for pid, thumb in thumbnails.items()
            if pid in stored and stored[pid] != thumb.content_hash
        ]
        for start in range(0, len(operations), UPSERT_BATCH):
            with self._engine("writing thumbnails"):
                self._client.batch_update_points(
                    self.collection, operations[start : start + UPSERT_BATCH], wait=True
                )

    def thumbnail(self, product_id: str) -> Thumbnail | None:
        from qdrant_client import models

        self._live_meta()
        with self._engine("retrieve"):
            records = self._client.retrieve(
                self.collection,
                [point_id(product_id)],
                with_payload=models.PayloadSelectorInclude(include=[THUMBNAIL_KEY]),
            )
        if not records or not records[0].payload:
            return None
        return from_payload(records[0].payload.get(THUMBNAIL_KEY))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
