"""Store on qdrant-client: a Qdrant server (``http://…``) or the in-memory local mode (``:memory:``).

The clipy metadata is kept in the collection's own metadata (``metadata={"clipy": …}``), so
nothing extra shows up in searches or counts.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clipy_qdrant.errors import StoreError
from clipy_qdrant.filters import Range, Scalar
from clipy_qdrant.lexical import LEXICAL, SparseTerms
from clipy_qdrant.store.base import PRODUCT_ID_KEY, THUMBNAIL_KEY, Thumbnail, point_id
from clipy_qdrant.store.engine import Conditions, EnginePoint, EngineSearch, Selector
from clipy_qdrant.store.meta import StoreMeta
from clipy_qdrant.store.options import (
    CollectionOptions,
    client_collection_kwargs,
    client_search_params,
)
from clipy_qdrant.store.qdrant import DEFAULT_HNSW_EF, UPSERT_BATCH, QdrantStore
from clipy_qdrant.thumbnails import from_payload, to_payload

META_KEY = "clipy"
#: Collection metadata key of the catalog vocabulary (beside the clipy metadata).
VOCABULARY_KEY = "clipy_vocabulary"


def _payload_selector(payload: bool | list[str]) -> Any:
    """The engine's payload selector: every key but the thumbnail (base64 bytes that searches,
    retrieves and scrolls never return), or just the listed keys."""
    from qdrant_client import models

    if payload is True:
        return models.PayloadSelectorExclude(exclude=[THUMBNAIL_KEY])
    return payload


#: Set-payload operations sent per batch_update_points call.
_OPERATIONS_PER_CALL = 64


class ClientStore(QdrantStore):
    """:class:`~clipy_qdrant.store.base.VectorStore` over qdrant-client.

    ``url=":memory:"`` uses qdrant-client's local mode (brute force, no indexes; for tests),
    anything else is a server URL. ``options`` (shards, replicas, storage, quantization,
    graph) apply when the collection is created; local mode records them and searches
    exactly. ``index_timeout_s`` bounds :meth:`build_index`'s wait for the server's optimizer.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        collection: str = "products",
        *,
        hnsw_ef: int = DEFAULT_HNSW_EF,
        options: CollectionOptions | None = None,
        timeout: int = 60,
        index_timeout_s: float = 3600.0,
    ) -> None:
        from qdrant_client import QdrantClient

        super().__init__(hnsw_ef=hnsw_ef, options=options)
        self.url = url
        self.collection = collection
        self.index_timeout_s = index_timeout_s
        self.local = url == ":memory:"
        self._client = (
            QdrantClient(":memory:")
            if self.local
            else QdrantClient(url=url, api_key=api_key, timeout=timeout)
        )
        self._meta = self._read_meta()

    def __repr__(self) -> str:
        return f"ClientStore({self.url!r}, collection={self.collection!r})"

    @property
    def where(self) -> str:
        return f"{self.url} collection {self.collection!r}"

    def _failure_hint(self) -> str:
        return "" if self.local else " (is the server running? `docker compose up -d`)"

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

    # -- engine calls -------------------------------------------------------------------

    def _create_collection(self, meta: StoreMeta) -> None:
        from qdrant_client import models

        # BM25: the stored weights are term frequencies; the engine applies the IDF.
        sparse = (
            {LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)}
            if meta.lexical
            else None
        )
        self._client.create_collection(
            self.collection,
            sparse_vectors_config=sparse,
            metadata={META_KEY: meta.to_json()},
            **client_collection_kwargs(meta.options, meta.encoder.dim, fused=meta.fused),
        )

    def _write_meta(self, meta: StoreMeta) -> None:
        self._client.update_collection(self.collection, metadata={META_KEY: meta.to_json()})

    def _drop_collection(self) -> None:
        if self._client.collection_exists(self.collection):
            self._client.delete_collection(self.collection)

    def _create_payload_indexes(self, fields: Mapping[str, str]) -> None:
        from qdrant_client import models

        with warnings.catch_warnings():
            # Local mode accepts indexes and warns that they have no effect: expected here.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for name, kind in fields.items():
                self._client.create_payload_index(
                    self.collection, name, models.PayloadSchemaType(kind), wait=True
                )

    def _read_indexed_fields(self) -> dict[str, str]:
        # Local mode keeps no indexes, so the declared ones stand in for them.
        if self.local:
            return dict(self._meta.indexed_fields) if self._meta is not None else {}
        schema = self._client.get_collection(self.collection).payload_schema
        return {
            name: str(getattr(info.data_type, "value", info.data_type))
            for name, info in schema.items()
        }

    def _upsert_points(self, points: Sequence[EnginePoint]) -> None:
        from qdrant_client import models

        batch = []
        for p in points:
            vectors: dict[str, Any] = {name: vec.tolist() for name, vec in p.vectors.items()}
            if p.lexical:
                vectors[LEXICAL] = models.SparseVector(
                    indices=list(p.lexical.indices), values=list(p.lexical.values)
                )
            batch.append(models.PointStruct(id=p.id, vector=vectors, payload=p.payload))
        self._client.upsert(self.collection, batch, wait=True)

    def _update_vectors(self, name: str, rows: Sequence[tuple[str, np.ndarray]]) -> None:
        from qdrant_client import models

        points = [models.PointVectors(id=pid, vector={name: v.tolist()}) for pid, v in rows]
        self._client.update_vectors(self.collection, points, wait=True)

    def _set_payloads(self, key: str, targets: Sequence[tuple[Any, list[str]]]) -> None:
        from qdrant_client import models

        operations = [
            models.SetPayloadOperation(
                set_payload=models.SetPayload(payload={key: value}, points=list(ids))
            )
            for value, ids in targets
        ]
        for start in range(0, len(operations), _OPERATIONS_PER_CALL):
            self._client.batch_update_points(
                self.collection, operations[start : start + _OPERATIONS_PER_CALL], wait=True
            )

    def _search(self, search: EngineSearch) -> Sequence[Any]:
        return self._client.query_points(
            self.collection,
            query=search.query.tolist(),
            using=search.using,
            query_filter=search.filter,
            # Local mode is always exact and warns about search params, so send none there.
            search_params=None
            if self.local
            else client_search_params(self.options, search.ef, search.exact),
            limit=search.limit,
            with_payload=_payload_selector(search.payload),
        ).points

    def _search_sparse(self, query: SparseTerms, limit: int, flt: Any) -> Sequence[Any]:
        from qdrant_client import models

        return self._client.query_points(
            self.collection,
            query=models.SparseVector(indices=list(query.indices), values=list(query.values)),
            using=LEXICAL,
            query_filter=flt,
            limit=limit,
            with_payload=False,
        ).points

    def _read_vocabulary(self) -> dict[str, Any] | None:
        info = self._client.get_collection(self.collection)
        text = (info.config.metadata or {}).get(VOCABULARY_KEY)
        data = json.loads(text) if isinstance(text, str) else None
        return data if isinstance(data, dict) else None

    def _write_vocabulary(self, data: dict[str, Any]) -> None:
        # Collection metadata updates merge by key, so the clipy metadata stays; the
        # vocabulary goes in as one JSON string, which a merge replaces whole.
        self._client.update_collection(
            self.collection, metadata={VOCABULARY_KEY: json.dumps(data, ensure_ascii=False)}
        )

    def _retrieve(
        self, ids: list[str], *, payload: Selector, with_vectors: Selector
    ) -> Sequence[Any]:
        return self._client.retrieve(
            self.collection,
            list(ids),
            with_payload=_payload_selector(payload),
            with_vectors=with_vectors,
        )

    def _scroll_page(
        self, offset: Any, limit: int, *, with_vectors: Selector, payload: Selector
    ) -> tuple[list[Any], Any]:
        records, next_offset = self._client.scroll(
            self.collection,
            limit=limit,
            offset=offset,
            with_payload=_payload_selector(payload),
            with_vectors=with_vectors,
        )
        return list(records), next_offset

    def _count(self, flt: Any) -> int:
        return int(self._client.count(self.collection, count_filter=flt, exact=True).count)

    def _facet(self, key: str, flt: Any, limit: int) -> Sequence[Any]:
        return list(
            self._client.facet(self.collection, key, facet_filter=flt, limit=limit, exact=True).hits
        )

    def _build_index(self) -> None:
        """Wait for the server's optimizer to finish indexing (local mode: nothing to do)."""
        from qdrant_client import models

        if self.local:
            return
        deadline = time.monotonic() + self.index_timeout_s
        while True:
            status = self._client.get_collection(self.collection).status
            if status == models.CollectionStatus.GREEN:
                return
            if time.monotonic() > deadline:
                raise StoreError(
                    f"store {self.where}: index still building after "
                    f"{self.index_timeout_s:.0f} s (status {status}); wait and check the server"
                )
            time.sleep(1.0)

    def _close_engine(self) -> None:
        self._client.close()

    # -- thumbnails (base64 in the payload, key ``thumbnail``, never indexed) ---------------

    def _write_thumbnails(self, thumbnails: Mapping[str, Thumbnail]) -> None:
        """A point is rewritten only when its stored thumbnail was made from other content."""
        from qdrant_client import models

        ids = list(thumbnails)
        # The read of the stored hashes fails as every read does ("retrieve failed").
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
            self._client.batch_update_points(
                self.collection, operations[start : start + UPSERT_BATCH], wait=True
            )

    def _read_thumbnail(self, product_id: str) -> Thumbnail | None:
        from qdrant_client import models

        records = self._client.retrieve(
            self.collection,
            [point_id(product_id)],
            with_payload=models.PayloadSelectorInclude(include=[THUMBNAIL_KEY]),
        )
        if not records or not records[0].payload:
            return None
        return from_payload(records[0].payload.get(THUMBNAIL_KEY))

    # -- filter leaves ------------------------------------------------------------------

    def _match_value(self, key: str, value: Scalar) -> Any:
        from qdrant_client import models

        return models.FieldCondition(key=key, match=models.MatchValue(value=value))  # type: ignore[arg-type]

    def _match_any(self, key: str, values: list[Any]) -> Any:
        from qdrant_client import models

        return models.FieldCondition(key=key, match=models.MatchAny(any=values))

    def _match_range(self, cond: Range) -> Any:
        from qdrant_client import models

        bounds = models.Range(gt=cond.gt, gte=cond.gte, lt=cond.lt, lte=cond.lte)
        return models.FieldCondition(key=cond.field, range=bounds)

    def _bool_filter(
        self, *, must: Conditions = None, must_not: Conditions = None, should: Conditions = None
    ) -> Any:
        from qdrant_client import models

        return models.Filter(must=must, must_not=must_not, should=should)
