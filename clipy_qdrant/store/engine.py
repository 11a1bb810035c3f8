"""The engine calls a Qdrant backend supplies, and what they take.

:class:`EngineCalls` lists them: each takes and returns the engine's own objects and raises
whatever the engine raises. :class:`~clipy_qdrant.store.qdrant.QdrantStore` builds the
:class:`~clipy_qdrant.store.base.VectorStore` flow over them once; a backend
(:class:`~clipy_qdrant.store.edge.EdgeStore`, :class:`~clipy_qdrant.store.client.ClientStore`)
implements them. The walk over clipy's filter model is here too
(:meth:`EngineCalls._engine_filter`), so that a backend supplies only the filter leaves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipy_qdrant.filters import Filter, Match, Range, Scalar
from clipy_qdrant.lexical import SparseTerms
from clipy_qdrant.store.base import Thumbnail
from clipy_qdrant.store.convert import match_parts
from clipy_qdrant.store.meta import StoreMeta

#: What a read returns of a point's payload or vectors: all, none, or those names.
Selector = bool | list[str]
#: The engine's conditions of one clause of a boolean filter (``None``: no such clause).
Conditions = list[Any] | None


@dataclass(frozen=True)
class EnginePoint:
    """One point ready for the engine: Qdrant id, checked float32 vectors, full payload, and
    the lexical sparse vector (``None``: the point gets none; never empty)."""

    id: str
    vectors: dict[str, np.ndarray]
    payload: dict[str, Any]
    lexical: SparseTerms | None = None


@dataclass(frozen=True)
class EngineSearch:
    """One nearest-neighbour search for the engine: vector ``using`` queried with ``query``
    (checked float32) for ``limit`` hits under the engine's filter ``filter`` (``None``: none);
    ``payload`` is all of it (``True``), none (``False``) or those keys; ``exact`` skips the
    HNSW graph, else ``ef`` is the graph walk's beam width."""

    using: str
    query: np.ndarray
    limit: int
    filter: Any
    payload: bool | list[str]
    exact: bool
    ef: int


class EngineCalls(ABC):
    """The engine calls of a Qdrant backend, with the engine's own types."""

    @abstractmethod
    def _create_collection(self, meta: StoreMeta) -> None:
        """Create an empty collection for ``meta.encoder`` and record ``meta`` with it."""

    @abstractmethod
    def _write_meta(self, meta: StoreMeta) -> None:
        """Replace the recorded metadata of the existing collection with ``meta``."""

    @abstractmethod
    def _drop_collection(self) -> None:
        """Remove the collection and its metadata, if there is one."""

    @abstractmethod
    def _create_payload_indexes(self, fields: Mapping[str, str]) -> None:
        """Create a payload index ``{field: type}`` for each entry."""

    @abstractmethod
    def _read_indexed_fields(self) -> dict[str, str]:
        """The payload indexes the engine reports, as ``{field: FieldType name}``."""

    @abstractmethod
    def _upsert_points(self, points: Sequence[EnginePoint]) -> None:
        """Write (insert or replace) one batch of points."""

    @abstractmethod
    def _update_vectors(self, name: str, rows: Sequence[tuple[str, np.ndarray]]) -> None:
        """Replace vector ``name`` of the points ``rows`` (``(point id, vector)``)."""

    @abstractmethod
    def _set_payloads(self, key: str, targets: Sequence[tuple[Any, list[str]]]) -> None:
        """For each ``(value, point ids)`` set payload ``key`` to ``value`` on those points."""

    @abstractmethod
    def _search(self, search: EngineSearch) -> Sequence[Any]:
        """The nearest hits of ``search``, best first; each with ``.id`` (the point id),
        ``.score`` and ``.payload``."""

    @abstractmethod
    def _search_sparse(self, query: SparseTerms, limit: int, flt: Any) -> Sequence[Any]:
        """Best hits by the lexical sparse vector (IDF-weighted dot product) under ``flt``,
        best first; each with ``.score`` and ``.payload`` (the product id only)."""

    @abstractmethod
    def _read_vocabulary(self) -> dict[str, Any] | None:
        """The recorded vocabulary JSON, ``None`` when there is none."""

    @abstractmethod
    def _write_vocabulary(self, data: dict[str, Any]) -> None:
        """Record the vocabulary JSON with the collection (replacing the previous one)."""

    @abstractmethod
    def _retrieve(
        self, ids: list[str], *, payload: Selector, with_vectors: Selector
    ) -> Sequence[Any]:
        """Records (``.id``, ``.payload``, ``.vector``) of those point ids that exist."""

    @abstractmethod
    def _scroll_page(
        self, offset: Any, limit: int, *, with_vectors: Selector, payload: Selector
    ) -> tuple[list[Any], Any]:
        """One page of records (the whole payload, or the listed keys) from ``offset``
        (``None``: the start), and the next page's offset (``None`` after the last page)."""

    @abstractmethod
    def _count(self, flt: Any) -> int:
        """Exact number of points matching engine filter ``flt`` (``None``: all)."""

    @abstractmethod
    def _facet(self, key: str, flt: Any, limit: int) -> Sequence[Any]:
        """Exact value counts of payload field ``key`` (hits with ``.value`` and ``.count``)."""

    @abstractmethod
    def _write_thumbnails(self, thumbnails: Mapping[str, Thumbnail]) -> None:
        """Store ``{product_id: thumbnail}`` (at least one), leaving a product whose stored
        thumbnail has the same content hash untouched."""

    @abstractmethod
    def _read_thumbnail(self, product_id: str) -> Thumbnail | None:
        """The stored thumbnail of a product; ``None`` when it has none."""

    @abstractmethod
    def _build_index(self) -> None:
        """Block until the HNSW graph covers every stored vector."""

    @abstractmethod
    def _close_engine(self) -> None:
        """Flush and release the engine (locks, connections)."""

    # -- filter leaves: the engine's condition objects ---------------------------------------

    @abstractmethod
    def _match_value(self, key: str, value: Scalar) -> Any:
        """Condition: payload ``key`` equals ``value`` (a string, int or bool)."""

    @abstractmethod
    def _match_any(self, key: str, values: list[Any]) -> Any:
        """Condition: payload ``key`` equals one of ``values`` (all strings or all ints)."""

    @abstractmethod
    def _match_range(self, cond: Range) -> Any:
        """Condition: numeric payload ``cond.field`` within the bounds (unset bounds are open)."""

    @abstractmethod
    def _bool_filter(
        self, *, must: Conditions = None, must_not: Conditions = None, should: Conditions = None
    ) -> Any:
        """The engine's filter: all of ``must``, none of ``must_not``, one of ``should``."""

    def _failure_hint(self) -> str:
        """Appended to engine failures (e.g. how to start a server); empty by default."""
        return ""

    # -- clipy's filter model as the engine's -----------------------------------------------

    def _engine_filter(self, flt: Filter | None) -> Any:
        """clipy's filter as the engine's (``None`` for no filter)."""
        if not flt:
            return None
        return self._bool_filter(
            must=[self._condition(c) for c in flt.must] or None,
            must_not=[self._condition(c) for c in flt.must_not] or None,
        )

    def _condition(self, cond: Match | Range) -> Any:
        if isinstance(cond, Range):
            return self._match_range(cond)
        parts = []
        for kind, value in match_parts(cond.values):
            if kind == "equal":
                parts.append(self._match_range(Range(cond.field, gte=value, lte=value)))
            elif kind == "any":
                parts.append(self._match_any(cond.field, value))
            else:
                parts.append(self._match_value(cond.field, value))
        return parts[0] if len(parts) == 1 else self._bool_filter(should=parts)
