"""The flow both Qdrant backends share, over a small set of engine calls.

:class:`QdrantStore` implements :class:`~clipy_qdrant.store.base.VectorStore` once: argument
checks, the collection-creation flow and encoder check, payload and vector conversion (with
:mod:`~clipy_qdrant.store.convert`), the walk over clipy's filter model, the scroll loop and
every read/write's plumbing. A backend
(:class:`~clipy_qdrant.store.edge.EdgeStore`, :class:`~clipy_qdrant.store.client.ClientStore`)
subclasses it and supplies only the engine calls (:class:`~clipy_qdrant.store.engine.EngineCalls`),
which take and return the engine's own objects and raise whatever the engine raises;
:meth:`QdrantStore._engine` turns that into a one-line :class:`StoreError`.

Records and hits coming back from either engine are read through the attributes both share:
``.id``, ``.payload`` and ``.vector`` (records), ``.payload`` and ``.score`` (hits).
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self

import numpy as np

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.errors import ConfigError, StoreError, is_engine_panic
from clipy_qdrant.filters import Filter
from clipy_qdrant.lexical import LEXICAL, Bm25Params, SparseTerms
from clipy_qdrant.spelling import Vocabulary
from clipy_qdrant.store.base import (
    CONTENT_HASH_KEY,
    PRODUCT_ID_KEY,
    VECTOR_NAMES,
    FieldType,
    PointRecord,
    ScoredPoint,
    StoredPoint,
    Thumbnail,
    point_id,
)
from clipy_qdrant.store.convert import (
    FACET_FETCH,
    checked_field_types,
    group_by_value,
    has_both_channels,
    payload_of,
    query_vector,
    sorted_facet,
    stored_point,
    vectors_of,
)
from clipy_qdrant.store.engine import EngineCalls, EnginePoint, EngineSearch
from clipy_qdrant.store.fused import FUSED, fused_dim
from clipy_qdrant.store.meta import HubnessInfo, StoreMeta, check_same_encoder
from clipy_qdrant.store.options import CollectionOptions

#: HNSW search beam width of the channel lists (``CLIPY_HNSW_EF``). On the full catalog the
#: weighted fused top-20 of text, filtered text and image queries at 128 matches the one from
#: exact channel lists in 0.9992-1.0 of its hits (256: 0.9997-1.0) for about 10 % less CPU
#: per query in ``clipy serve`` (docs/experiments.md, "Search beam width"); RRF and DBSF
#: lists walk twice this beam (``clipy_qdrant.retrieval.RANK_FUSION_BEAM``). A list of
#: ``limit`` candidates walks a beam of at least ``limit``. The graph's m / ef_construct are
#: CollectionOptions' (Qdrant's defaults 16 / 100).
DEFAULT_HNSW_EF = 128

#: Points (or payload targets) sent to the engine per write call: bounded memory for big ingests.
UPSERT_BATCH = 512


def _payload_request(with_payload: bool | Sequence[str]) -> bool | list[str]:
    """What to ask the engine for: the whole payload (``True``), none (``False``), or the
    listed keys with the product id."""
    if isinstance(with_payload, bool):
        return with_payload
    return [PRODUCT_ID_KEY, *(k for k in with_payload if k != PRODUCT_ID_KEY)]


def id_key(engine_id: Any) -> Any:
    """A point id as the engine returns it, as a dict key: a ``uuid.UUID``'s integer (its
    ``__hash__`` and ``__eq__`` run in Python, thousands of times per fused query), any
    other id as it is."""
    return engine_id.int if isinstance(engine_id, uuid.UUID) else engine_id


class QdrantStore(EngineCalls):
    """A :class:`~clipy_qdrant.store.base.VectorStore` on a Qdrant engine.

    ``options`` (:class:`~clipy_qdrant.store.options.CollectionOptions`: shards, storage,
    quantization, HNSW graph) apply when this store creates the collection and are recorded
    with it; an existing collection keeps its own, and asking for different ones is an error.
    ``hnsw_ef`` is the search-time beam width (higher: better recall, slower).
    Subclasses set :attr:`where` (how errors name the store) and implement the engine calls.
    """

    def __init__(
        self, *, hnsw_ef: int = DEFAULT_HNSW_EF, options: CollectionOptions | None = None
    ) -> None:
        if hnsw_ef < 1:
            raise ConfigError(f"hnsw_ef must be >= 1 (got {hnsw_ef})")
        self.hnsw_ef = hnsw_ef
        #: The options asked for (``None``: not asked; the collection's own, or defaults).
        self._requested_options = options
        #: The collection's metadata; ``None`` while there is no collection.
        self._meta: StoreMeta | None = None
        self._closed = False
        #: The product id of each point id seen, keyed by the id as the engine returns it (a
        #: point id is a function of its product id, :func:`point_id`, so an entry never goes
        #: stale): hits that need nothing but their product id are read without their payload,
        #: which the engine would otherwise load. At most one entry per stored product. Keyed
        #: by :func:`id_key` (a UUID's integer: hashed and compared in C, not in Python).
        self._product_of: dict[Any, str] = {}

    @property
    def options(self) -> CollectionOptions:
        """The collection's options; before creation, those it will be created with."""
        if self._meta is not None:
            return self._meta.options
        return self._requested_options or CollectionOptions()

    def request_options(self, options: CollectionOptions) -> None:
        """Ask for ``options`` for the collection this store creates, as the constructor's
        ``options`` do; an existing collection with other options makes
        :meth:`ensure_collection` raise."""
        self._requested_options = options

    def collection_options(self) -> CollectionOptions | None:
        """The options the collection was created with; ``None`` if there is no collection."""
        return self._meta.options if self._meta is not None else None

    @property
    @abstractmethod
    def where(self) -> str:
        """The store as error messages name it (folder, or URL and collection)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.where} is closed")

    def _live_meta(self) -> StoreMeta:
        """The metadata of the open store's collection; raises when closed or empty."""
        self._check_open()
        if self._meta is None:
            raise StoreError(f"store {self.where} has no collection yet; run `clipy ingest` first")
        return self._meta

    @contextmanager
    def _engine(self, what: str) -> Iterator[None]:
        """Run engine calls: refuse a closed store, turn engine errors into ``StoreError``."""
        self._check_open()
        try:
            yield
        except StoreError:
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception) and not is_engine_panic(exc):
                raise
            raise StoreError(
                f"store {self.where}: {what} failed: {exc}{self._failure_hint()}"
            ) from None

    def _save_meta(self, meta: StoreMeta) -> None:
        with self._engine("saving clipy metadata"):
            self._write_meta(meta)

    # -- collection -------------------------------------------------------------------------

    def ensure_collection(
        self,
        encoder: EncoderInfo,
        indexed_fields: Mapping[str, FieldType] | None = None,
        *,
        lexical: bool | None = None,
    ) -> None:
        """Create the collection for ``encoder`` (and the payload indexes) if absent, else check
        that it was written by the same encoder: ``EncoderMismatchError`` if not.

        ``lexical``: create the collection with (``True``, the default for ``None``) or
        without the lexical sparse vector; given explicitly, an existing collection created
        the other way raises ``StoreError`` (a copy must mirror its source)."""
        self._check_open()
        fields = checked_field_types(indexed_fields)
        if self._meta is not None:
            check_same_encoder(self.where, self._meta, encoder)
            self._check_requested_options(self._meta.options)
            meta = self._meta
            if lexical is not None and lexical != meta.lexical:
                have, want = ("with", "without") if meta.lexical else ("without", "with")
                raise StoreError(
                    f"store {self.where} was created {have} the lexical (BM25) vector, not "
                    f"{want} it; use a new store or delete its collection"
                )
        else:
            meta = StoreMeta(
                encoder,
                {},
                options=self.options,
                lexical=True if lexical is None else lexical,
                fused=self.options.stores_fused(),
            )
            with self._engine("creating the collection"):
                self._create_collection(meta)
            self._meta = meta
        wanted = {PRODUCT_ID_KEY: "keyword", **fields}
        missing = {k: v for k, v in wanted.items() if meta.indexed_fields.get(k) != v}
        if missing:
            with self._engine("creating payload indexes"):
                self._create_payload_indexes(missing)
            meta.indexed_fields.update(missing)
            self._save_meta(meta)

    def _check_requested_options(self, existing: CollectionOptions) -> None:
        """Refuse options that differ from an existing collection's: they apply at creation."""
        wanted = self._requested_options
        if wanted is None or wanted == existing:
            return
        differ = [
            name
            for name in type(wanted).model_fields
            if getattr(wanted, name) != getattr(existing, name)
        ]
        raise StoreError(
            f"store {self.where} was created with other collection options ("
            + ", ".join(f"{n} {getattr(existing, n)!r}, not {getattr(wanted, n)!r}" for n in differ)
            + "); they apply when a collection is created: leave them out, or --recreate"
        )

    def delete_collection(self) -> None:
        """Remove the collection and everything in it; :meth:`ensure_collection` starts afresh."""
        with self._engine("deleting the collection"):
            self._drop_collection()
        self._meta = None

    def encoder_info(self) -> EncoderInfo | None:
        """The encoder recorded at creation; ``None`` if there is no collection yet."""
        return self._meta.encoder if self._meta is not None else None

    def check_encoder(self, encoder: EncoderInfo) -> None:
        """Raise ``EncoderMismatchError`` (``StoreError`` if empty) unless ``encoder`` wrote it."""
        check_same_encoder(self.where, self._meta, encoder)

    def indexed_fields(self) -> dict[str, str]:
        """Payload indexes: ``{field: type}``."""
        self._live_meta()
        with self._engine("reading collection info"):
            return self._read_indexed_fields()

    def hubness_info(self) -> HubnessInfo | None:
        """The record of the hubness values in the payloads; ``None`` when absent or stale."""
        return self._meta.hubness if self._meta is not None else None

    def set_hubness_info(self, info: HubnessInfo | None) -> None:
        """Record (or, with ``None``, mark stale) the hubness values."""
        meta = self._live_meta()
        if meta.hubness != info:
            meta.hubness = info
            self._save_meta(meta)

    def has_lexical(self) -> bool:
        """True when the collection holds the lexical (BM25 sparse) vector: every collection
        this version creates; a collection created before the lexical channel has none."""
        return self._meta is not None and self._meta.lexical

    def has_fused(self) -> bool:
        """True when every product holds the fused vector (:mod:`clipy_qdrant.store.fused`)."""
        return self._meta is not None and self._meta.fused

    def _vectors_read(self, with_vectors: bool) -> bool | list[str]:
        """What a read asks for: the channels (and the lexical vector), never the fused vector,
        which is derived from them and twice their size."""
        meta = self._live_meta()
        if not with_vectors or not meta.fused:
            return with_vectors
        return [*VECTOR_NAMES, *([LEXICAL] if meta.lexical else [])]

    def bm25_params(self) -> Bm25Params | None:
        """The BM25 constants of the stored lexical vectors (``None``: none written yet)."""
        return self._meta.bm25 if self._meta is not None else None

    def set_bm25_params(self, params: Bm25Params) -> None:
        """Record the BM25 constants; they are fixed once lexical vectors exist."""
        meta = self._live_meta()
        if not meta.lexical:
            raise StoreError(f"store {self.where} has no lexical vector; re-ingest with --recreate")
        if meta.bm25 is not None and meta.bm25 != params:
            raise StoreError(
                f"store {self.where}: lexical vectors were written with {meta.bm25}, not {params}"
            )
        if meta.bm25 is None:
            meta.bm25 = params
            self._save_meta(meta)

    def vocabulary(self) -> Vocabulary | None:
        """The catalog vocabulary recorded after the last ingest (``None``: none)."""
        self._live_meta()
        with self._engine("reading the vocabulary"):
            data = self._read_vocabulary()
        if data is None:
            return None
        try:
            return Vocabulary.from_json(data)
        except Exception as exc:
            raise StoreError(
                f"store {self.where}: unreadable vocabulary ({exc}); run `clipy ingest` again"
            ) from None

    def save_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Record the catalog vocabulary with the collection."""
        self._live_meta()
        with self._engine("saving the vocabulary"):
            self._write_vocabulary(vocabulary.to_json())

    def build_index(self) -> None:
        """Build the HNSW graph after a bulk load (blocking). Exact search works before it."""
        self._live_meta()
        with self._engine("building the index"):
            self._build_index()

    def close(self) -> None:
        """Flush and release the engine; safe to call twice."""
        if self._closed:
            return
        try:
            with self._engine("closing"):
                self._close_engine()
        finally:
            self._closed = True

    # -- writing ----------------------------------------------------------------------------

    def upsert(self, points: Sequence[PointRecord]) -> None:
        """Write the products (a product already stored is replaced)."""
        meta = self._live_meta()
        dim = meta.encoder.dim
        if meta.lexical and meta.bm25 is None and any(p.lexical for p in points):
            raise StoreError(
                f"store {self.where}: record the BM25 constants (set_bm25_params) before "
                "writing lexical vectors"
            )
        if meta.fused and not all(has_both_channels(p) for p in points):
            # The fused vector needs both channels: the store's searches take the channel
            # lists from now on.
            meta.fused = False
            self._save_meta(meta)
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                EnginePoint(
                    point_id(p.product_id),
                    vectors_of(p, dim, fused=meta.fused),
                    payload_of(p),
                    # An empty sparse vector is never written: qdrant-client's local mode
                    # would count it in the IDF's N, qdrant-edge would not.
                    p.lexical if meta.lexical and p.lexical else None,
                )
                for p in points[start : start + UPSERT_BATCH]
            ]
            with self._engine("upsert"):
                self._upsert_points(batch)

    def set_payload(self, key: str, values: Mapping[str, Any]) -> None:
        """Set payload field ``key`` to ``values[product_id]`` on those stored products (other
        fields kept). Products sharing a value share an engine call. A product id that is not
        stored is a ``StoreError``, raised before anything is written."""
        self._live_meta()
        ids = {point_id(p): str(p) for p in values}
        missing = [ids[i] for i in sorted(set(ids) - self._stored_point_ids(list(ids)))]
        if missing:
            raise StoreError(
                f"store {self.where}: cannot set {key!r} on {len(missing)} product(s) that are "
                f"not stored, e.g. {missing[:3]}"
            )
        targets = [
            (value, [point_id(p) for p in product_ids[start : start + UPSERT_BATCH]])
            for value, product_ids in group_by_value(values).items()
            for start in range(0, len(product_ids), UPSERT_BATCH)
        ]
        with self._engine(f"setting payload {key!r}"):
            self._set_payloads(key, targets)

    def set_fused(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Rewrite the fused vector of those stored products (``{product_id: vector}``, each
        :func:`~clipy_qdrant.store.fused.stored_fused`); a store without it raises
        ``StoreError``."""
        meta = self._live_meta()
        if not meta.fused:
            raise StoreError(f"store {self.where} has no fused vector")
        size = fused_dim(meta.encoder.dim)
        rows = [(point_id(pid), np.asarray(v, np.float32)) for pid, v in vectors.items()]
        for _, vector in rows:
            if vector.shape != (size,) or not np.all(np.isfinite(vector)):
                raise StoreError(
                    f"store {self.where}: a fused vector must hold {size} finite values "
                    f"(got shape {vector.shape})"
                )
        with self._engine("writing fused vectors"):
            for start in range(0, len(rows), UPSERT_BATCH):
                self._update_vectors(FUSED, rows[start : start + UPSERT_BATCH])

    def _stored_point_ids(self, ids: list[str]) -> set[str]:
        """Those of the point ids ``ids`` that are stored."""
        found: set[str] = set()
        with self._engine("retrieve"):
            for start in range(0, len(ids), UPSERT_BATCH):
                chunk = ids[start : start + UPSERT_BATCH]
                found.update(
                    str(r.id) for r in self._retrieve(chunk, payload=False, with_vectors=False)
                )
        return found

    # -- reading ----------------------------------------------------------------------------

    def search(
        self,
        using: str,
        vector: np.ndarray,
        limit: int,
        flt: Filter | None = None,
        *,
        with_payload: bool | Sequence[str] = True,
        exact: bool = False,
        ef: int | None = None,
    ) -> list[ScoredPoint]:
        """Nearest products by cosine on the named vector, best first, restricted by ``flt``.
        ``with_payload``: the whole payload, none, or those keys (and the product id); ``ef``:
        the graph walk's beam width (``None``: :attr:`hnsw_ef`)."""
        meta = self._live_meta()
        query = query_vector(vector, meta.encoder.dim, using)
        if limit <= 0:
            return []
        payload = _payload_request(with_payload)
        with self._engine("search"):
            hits = self._search(
                EngineSearch(
                    using,
                    query,
                    int(limit),
                    self._engine_filter(flt),
                    payload=payload,
                    exact=exact,
                    ef=self.hnsw_ef if ef is None else ef,
                )
            )
            if payload is False:
                return [
                    ScoredPoint(product, float(h.score), None)
                    for h, product in zip(hits, self._product_ids(hits), strict=True)
                    if product is not None
                ]
        points = []
        for h in hits:
            data = dict(h.payload or {})
            product = str(data[PRODUCT_ID_KEY])
            self._product_of[id_key(h.id)] = product
            points.append(ScoredPoint(product, float(h.score), data))
        return points

    def _product_ids(self, hits: Sequence[Any]) -> list[str | None]:
        """The product id of each hit (``.id``: its point id, as the engine returns it) from
        :attr:`_product_of`, reading the product id payload of the points not seen yet
        (``None``: a point deleted since)."""
        known = self._product_of
        ids = [h.id for h in hits]
        keys = [id_key(i) for i in ids]
        unseen = [i for i, key in zip(ids, keys, strict=True) if key not in known]
        if unseen:
            for record in self._retrieve(unseen, payload=[PRODUCT_ID_KEY], with_vectors=False):
                if record.payload and PRODUCT_ID_KEY in record.payload:
                    known[id_key(record.id)] = str(record.payload[PRODUCT_ID_KEY])
        return [known.get(key) for key in keys]

    def search_lexical(
        self, query: SparseTerms, limit: int, flt: Filter | None = None
    ) -> list[ScoredPoint]:
        """Best products by BM25 under ``flt``, best first: the engine's IDF-weighted sparse
        dot product of ``query`` (:func:`clipy_qdrant.lexical.query_vector`) with the stored
        document vectors. Only products sharing a term with the query are returned; a store
        without the lexical vector raises ``StoreError``."""
        meta = self._live_meta()
        if not meta.lexical:
            raise StoreError(
                f"store {self.where} has no lexical vector; re-ingest with --recreate to add it"
            )
        if limit <= 0 or not query:
            return []
        with self._engine("lexical search"):
            hits = self._search_sparse(query, int(limit), self._engine_filter(flt))
            return [
                ScoredPoint(product, float(h.score), None)
                for h, product in zip(hits, self._product_ids(hits), strict=True)
                if product is not None
            ]

    def retrieve(
        self,
        product_ids: Sequence[str],
        *,
        with_payload: bool | Sequence[str] = True,
        with_vectors: bool = False,
    ) -> list[StoredPoint]:
        """Stored points for those ids that exist (order not guaranteed). ``with_payload``: the
        whole payload, none, or those keys (and the product id)."""
        self._live_meta()
        if not product_ids:
            return []
        payload = _payload_request(with_payload)
        with self._engine("retrieve"):
            records = self._retrieve(
                [point_id(p) for p in product_ids],
                payload=[PRODUCT_ID_KEY] if payload is False else payload,
                with_vectors=self._vectors_read(with_vectors),
            )
        return [stored_point(r, payload is not False, with_vectors) for r in records]

    def content_hashes(self, product_ids: Sequence[str]) -> dict[str, str]:
        """``{product_id: content_hash}`` for those of ``product_ids`` already stored."""
        self._live_meta()
        if not product_ids:
            return {}
        with self._engine("retrieve"):
            records = self._retrieve(
                [point_id(p) for p in product_ids],
                payload=[PRODUCT_ID_KEY, CONTENT_HASH_KEY],
                with_vectors=False,
            )
        return {
            str(r.payload[PRODUCT_ID_KEY]): str(r.payload.get(CONTENT_HASH_KEY, ""))
            for r in records
            if r.payload
        }

    def scroll(
        self,
        *,
        with_vectors: bool = False,
        with_payload: bool | Sequence[str] = True,
        batch_size: int = 1000,
    ) -> Iterator[StoredPoint]:
        """Every stored point once, fetched ``batch_size`` at a time. ``with_payload``: the
        whole payload, none, or those keys (and the product id). Each point's product id is
        remembered for the searches' hits (:attr:`_product_of`)."""
        self._live_meta()
        payload = _payload_request(with_payload)
        asked = [PRODUCT_ID_KEY] if payload is False else payload
        offset: Any = None
        while True:
            with self._engine("scroll"):
                records, offset = self._scroll_page(
                    offset, batch_size, with_vectors=self._vectors_read(with_vectors), payload=asked
                )
            for r in records:
                point = stored_point(r, payload is not False, with_vectors)
                if r.payload and PRODUCT_ID_KEY in r.payload:
                    self._product_of[id_key(r.id)] = point.product_id
                yield point
            if offset is None or not records:
                return

    def facet(
        self, key: str, flt: Filter | None = None, limit: int = 20
    ) -> list[tuple[str | int | bool, int]]:
        """The ``limit`` most frequent values of indexed field ``key`` among the products
        matching ``flt``, with exact counts, count descending then value ascending."""
        self._live_meta()
        engine_filter = self._engine_filter(flt)
        with self._engine(f"facet on {key!r}"):
            hits = self._facet(key, engine_filter, max(limit, FACET_FETCH))
        return sorted_facet([(h.value, h.count) for h in hits], limit)

    def put_thumbnails(self, thumbnails: Mapping[str, Thumbnail]) -> None:
        """Store ``{product_id: thumbnail}``; a product whose stored thumbnail has the same
        content hash is left untouched."""
        if not thumbnails:
            return
        self._live_meta()
        with self._engine("writing thumbnails"):
            self._write_thumbnails(thumbnails)

    def thumbnail(self, product_id: str) -> Thumbnail | None:
        """The stored thumbnail of a product; ``None`` when it has none."""
        self._live_meta()
        with self._engine("retrieve"):
            return self._read_thumbnail(product_id)

    def count(self, flt: Filter | None = None) -> int:
        """Number of stored products matching ``flt`` (0 when there is no collection)."""
        self._check_open()
        if self._meta is None:
            return 0
        with self._engine("count"):
            return int(self._count(self._engine_filter(flt)))
