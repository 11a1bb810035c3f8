"""The store contract: one interface, two backends (qdrant-edge in-process, qdrant-client).

A collection holds one point per product with two named vectors, ``image`` and ``text``
(cosine), their ``fused`` vector (:mod:`clipy_qdrant.store.fused`), and the product metadata
as payload. Point ids derive from product ids
(:func:`point_id`), so writing the same product again replaces it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

import numpy as np

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.filters import Filter
from clipy_qdrant.lexical import Bm25Params, SparseTerms
from clipy_qdrant.spelling import Vocabulary
from clipy_qdrant.store.meta import HubnessInfo
from clipy_qdrant.store.options import CollectionOptions

IMAGE = "image"
TEXT = "text"
VECTOR_NAMES: tuple[str, str] = (IMAGE, TEXT)

#: Payload keys the store itself writes beside the product metadata.
PRODUCT_ID_KEY = "product_id"
CONTENT_HASH_KEY = "content_hash"
#: Payload key of the product text the lexical channel indexes (kept so that the catalog
#: vocabulary can be rebuilt from the store alone; never shown in results).
LEXICAL_TEXT_KEY = "lexical_text"
#: Payload key of a product's hubness (see :mod:`clipy_qdrant.hubness`), written after ingest.
HUBNESS_KEY = "hubness"
#: Payload key of a product's thumbnail on a qdrant-client store (base64, never indexed, left
#: out of every payload that a search, retrieve or scroll returns).
THUMBNAIL_KEY = "thumbnail"

#: Payload index types a store accepts.
FieldType = Literal["keyword", "integer", "float", "text", "bool"]
FIELD_TYPES: frozenset[str] = frozenset(get_args(FieldType))

_NAMESPACE = uuid.UUID("6f1c2d1e-8f7b-4c59-9d55-2b0c6c1e9a10")


@functools.lru_cache(maxsize=1 << 17)
def point_id(product_id: str | int) -> str:
    """Deterministic Qdrant point id (UUID string) for a product id (remembered for the most
    recent 131,072 ids: a SHA-1 per id otherwise, for every product a query reads)."""
    return str(uuid.uuid5(_NAMESPACE, str(product_id)))


@dataclass
class PointRecord:
    """One product as written by ingest."""

    product_id: str
    vectors: Mapping[str, np.ndarray]  # {"image": (dim,), "text": (dim,)} float32
    payload: Mapping[str, Any]  # product metadata (the store adds product_id / content_hash)
    content_hash: str = ""
    #: The product text's BM25 document vector (:func:`clipy_qdrant.lexical.document_vector`);
    #: ``None`` or empty: the product has no lexical vector.
    lexical: SparseTerms | None = None


@dataclass
class ScoredPoint:
    """A search result from one vector: the cosine score and (optionally) the payload."""

    product_id: str
    score: float
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class Thumbnail:
    """A product's small picture (see :mod:`clipy_qdrant.thumbnails`), stored with the content
    hash of the product it was made from, so that re-ingesting an unchanged product rewrites
    nothing."""

    data: bytes
    media_type: str
    content_hash: str = ""


@dataclass
class StoredPoint:
    """A stored product as read back: payload and (when asked for) its named vectors."""

    product_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    #: The stored BM25 document vector (read with the vectors; ``None`` when it has none).
    lexical: SparseTerms | None = None


class VectorStore(Protocol):
    """What the query layer, ingest and evaluation need from Qdrant."""

    #: Search beam width of the HNSW channel lists (``CLIPY_HNSW_EF``).
    hnsw_ef: int

    def ensure_collection(
        self,
        encoder: EncoderInfo,
        indexed_fields: Mapping[str, FieldType] | None = None,
        *,
        lexical: bool | None = None,
    ) -> None:
        """Create the collection for ``encoder`` if absent (and the payload indexes), else check
        that it was written by the same encoder: raise ``EncoderMismatchError`` if not.
        ``lexical``: with (default) or without the lexical sparse vector; given explicitly, an
        existing collection created the other way raises ``StoreError``."""

    def delete_collection(self) -> None:
        """Remove the collection and everything in it (``--recreate``)."""

    def encoder_info(self) -> EncoderInfo | None:
        """The encoder recorded at creation; ``None`` if there is no collection yet."""

    def collection_options(self) -> CollectionOptions | None:
        """The options the collection was created with; ``None`` if there is no collection."""

    def check_encoder(self, encoder: EncoderInfo) -> None:
        """Raise ``EncoderMismatchError`` (or ``StoreError`` if empty) unless ``encoder`` wrote it."""

    def upsert(self, points: Sequence[PointRecord]) -> None: ...

    def set_payload(self, key: str, values: Mapping[str, Any]) -> None:
        """Set payload field ``key`` to ``values[product_id]`` on those stored products (other
        fields kept); a product id that is not stored raises ``StoreError``."""

    def hubness_info(self) -> HubnessInfo | None:
        """The record of the hubness values in the payloads; ``None`` when absent or stale."""

    def set_hubness_info(self, info: HubnessInfo | None) -> None:
        """Record (or, with ``None``, mark stale) the hubness values."""

    def content_hashes(self, product_ids: Sequence[str]) -> dict[str, str]:
        """``{product_id: content_hash}`` for those of ``product_ids`` already stored."""

    def has_lexical(self) -> bool:
        """True when the collection holds the lexical (BM25 sparse) vector."""

    def has_fused(self) -> bool:
        """True when every product holds the fused vector (:mod:`clipy_qdrant.store.fused`)."""

    def set_fused(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Rewrite the fused vector of those stored products (``{product_id: vector}``)."""

    def bm25_params(self) -> Bm25Params | None:
        """The BM25 constants the lexical vectors were written with (``None``: none yet)."""

    def set_bm25_params(self, params: Bm25Params) -> None:
        """Record the BM25 constants before the first lexical vector is written."""

    def vocabulary(self) -> Vocabulary | None:
        """The catalog vocabulary recorded after the last ingest (``None``: none)."""

    def save_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Record the catalog vocabulary (rebuilt from the stored texts after an ingest)."""

    def search_lexical(
        self, query: SparseTerms, limit: int, flt: Filter | None = None
    ) -> list[ScoredPoint]:
        """Best products by BM25 (sparse dot product with the engine's IDF), best first."""

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
        ``with_payload``: the whole payload, none (``payload`` is ``None``), or those keys and
        the product id. ``exact`` scans the matching products instead of walking the graph;
        ``ef`` is the walk's beam width (``None``: :attr:`hnsw_ef`)."""

    def retrieve(
        self,
        product_ids: Sequence[str],
        *,
        with_payload: bool | Sequence[str] = True,
        with_vectors: bool = False,
    ) -> list[StoredPoint]:
        """Stored points for those ids that exist (order not guaranteed). ``with_payload``: the
        whole payload, none, or those keys (and the product id)."""

    def scroll(
        self,
        *,
        with_vectors: bool = False,
        with_payload: bool | Sequence[str] = True,
        batch_size: int = 1000,
    ) -> Iterator[StoredPoint]:
        """Every stored point once. ``with_payload``: the whole payload, none, or those keys
        (and the product id)."""

    def count(self, flt: Filter | None = None) -> int: ...

    def facet(
        self, key: str, flt: Filter | None = None, limit: int = 20
    ) -> list[tuple[str | int | bool, int]]:
        """The ``limit`` most frequent values of indexed payload field ``key`` among the
        products matching ``flt``, with their exact counts: ``[(value, count), …]``, count
        descending then value ascending. A product with a list value counts once per value."""

    def put_thumbnails(self, thumbnails: Mapping[str, Thumbnail]) -> None:
        """Store ``{product_id: thumbnail}``; a product whose stored thumbnail has the same
        content hash is left untouched."""

    def thumbnail(self, product_id: str) -> Thumbnail | None:
        """The stored thumbnail of a product; ``None`` when it has none."""

    def indexed_fields(self) -> dict[str, str]:
        """Payload indexes: ``{field: type}``."""

    def build_index(self) -> None:
        """Build the HNSW graph after a bulk load (blocking). Exact search works before it."""

    def close(self) -> None: ...
