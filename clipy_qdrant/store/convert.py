"""Conversions between clipy's records and what a Qdrant engine takes: payloads, checked
vectors, stored points, and how a filter's values split into Qdrant's typed matches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clipy_qdrant.errors import StoreError
from clipy_qdrant.filters import Scalar
from clipy_qdrant.lexical import LEXICAL, SparseTerms
from clipy_qdrant.store.base import (
    CONTENT_HASH_KEY,
    FIELD_TYPES,
    HUBNESS_KEY,
    IMAGE,
    PRODUCT_ID_KEY,
    TEXT,
    VECTOR_NAMES,
    FieldType,
    PointRecord,
    StoredPoint,
)
from clipy_qdrant.store.fused import FUSED, fused_dim, stored_fused


def checked_field_types(indexed_fields: Mapping[str, FieldType] | None) -> dict[str, str]:
    """``indexed_fields`` as plain ``{field: type}``; raises on an unknown type."""
    fields = dict(indexed_fields or {})
    for name, kind in fields.items():
        if kind not in FIELD_TYPES:
            raise StoreError(
                f"payload index {name!r} has unknown type {kind!r}; use one of {sorted(FIELD_TYPES)}"
            )
    return {str(k): str(v) for k, v in fields.items()}


def plain(value: Any) -> Any:
    """JSON-friendly copy: numpy scalars/arrays become Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def group_by_value(values: Mapping[str, Any]) -> dict[Any, list[str]]:
    """``{value: [product_id, …]}``: one engine call sets one payload on many points."""
    groups: dict[Any, list[str]] = {}
    for product_id, value in values.items():
        groups.setdefault(plain(value), []).append(str(product_id))
    return groups


def payload_of(point: PointRecord) -> dict[str, Any]:
    """Stored payload: product metadata plus the store's own keys."""
    payload = {str(k): plain(v) for k, v in point.payload.items()}
    payload[PRODUCT_ID_KEY] = str(point.product_id)
    payload[CONTENT_HASH_KEY] = point.content_hash
    return payload


def has_both_channels(point: PointRecord) -> bool:
    """True when the point holds a ``text`` and an ``image`` vector (what a fused vector needs)."""
    return TEXT in point.vectors and IMAGE in point.vectors


def vectors_of(point: PointRecord, dim: int, *, fused: bool = False) -> dict[str, np.ndarray]:
    """The point's named vectors as float32 (dim,), checked for name, shape and finiteness;
    with ``fused``, its fused vector too (:func:`~clipy_qdrant.store.fused.stored_fused`,
    with the hubness of its payload, 0 without one; the point holds both channels)."""
    if not point.vectors:
        raise StoreError(f"product {point.product_id!r} has no vectors; nothing to store")
    out: dict[str, np.ndarray] = {}
    for name, vec in point.vectors.items():
        if name not in VECTOR_NAMES:
            raise StoreError(
                f"product {point.product_id!r}: unknown vector {name!r}; use one of {VECTOR_NAMES}"
            )
        arr = np.asarray(vec, dtype=np.float32).reshape(-1)
        if arr.shape[0] != dim:
            raise StoreError(
                f"product {point.product_id!r}: {name} vector has dim {arr.shape[0]}, "
                f"the store expects {dim}"
            )
        norm = float(np.linalg.norm(arr))
        if not np.isfinite(norm) or norm == 0.0:
            raise StoreError(
                f"product {point.product_id!r}: {name} vector is zero or not finite; "
                "check the encoder output"
            )
        out[name] = arr
    if fused:
        hubness = float(point.payload.get(HUBNESS_KEY, 0.0))
        out[FUSED] = stored_fused(out[TEXT], out[IMAGE], hubness)
    return out


def query_vector(vector: np.ndarray, dim: int, using: str) -> np.ndarray:
    """The query as float32, checked for vector name, shape and finiteness (``dim`` values, or
    the fused vector's length on ``fused``)."""
    if using not in (*VECTOR_NAMES, FUSED):
        raise StoreError(f"unknown vector {using!r}; use one of {(*VECTOR_NAMES, FUSED)}")
    arr = np.asarray(vector, dtype=np.float32).reshape(-1)
    size = fused_dim(dim) if using == FUSED else dim
    if arr.shape[0] != size:
        raise StoreError(f"query vector has dim {arr.shape[0]}, the store expects {size}")
    if not np.all(np.isfinite(arr)):
        raise StoreError("query vector is not finite; check the encoder output")
    return arr


def stored_point(record: Any, with_payload: bool, with_vectors: bool) -> StoredPoint:
    """An engine record (``.payload``, ``.vector``) as a :class:`StoredPoint`."""
    payload = dict(record.payload or {})
    vectors = dict((record.vector or {}) if with_vectors else {})
    sparse = vectors.pop(LEXICAL, None)
    vectors.pop(FUSED, None)  # derived from the channels; never read back as a channel
    return StoredPoint(
        str(payload.get(PRODUCT_ID_KEY)),
        payload if with_payload else {},
        {str(k): np.asarray(v, dtype=np.float32) for k, v in vectors.items()},
        sparse_terms(sparse) if sparse is not None else None,
    )


def sparse_terms(vector: Any) -> SparseTerms:
    """An engine's sparse vector (``.indices``, ``.values``) as :class:`SparseTerms`."""
    pairs = sorted(
        zip((int(i) for i in vector.indices), (float(v) for v in vector.values), strict=True)
    )
    return SparseTerms(tuple(i for i, _ in pairs), tuple(v for _, v in pairs))


def match_parts(values: Sequence[Scalar]) -> list[tuple[str, Any]]:
    """Split a Match's values into what Qdrant can match natively; a Match with several parts
    is their OR.

    ``("value", v)`` one string / int / bool; ``("any", [v, …])`` several strings or several
    ints; ``("equal", x)`` a float, as the range [x, x] (Qdrant matches no floats, and a range
    also finds 5.0 stored as 5). Known gap: an int value does not match a float stored in the
    payload (Qdrant's match is typed), where Python's ``5 == 5.0`` would.
    """
    strs = [v for v in values if isinstance(v, str)]
    bools = [v for v in values if isinstance(v, bool)]
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    floats = [v for v in values if isinstance(v, float)]
    parts: list[tuple[str, Any]] = []
    for group in (strs, ints):
        uniq = list(dict.fromkeys(group))
        if len(uniq) == 1:
            parts.append(("value", uniq[0]))
        elif uniq:
            parts.append(("any", uniq))
    parts.extend(("value", b) for b in dict.fromkeys(bools))
    parts.extend(("equal", f) for f in dict.fromkeys(floats))
    return parts


#: Values asked of the engine per facet call before clipy's own sort and cut: counts are
#: exact either way, and with at most this many distinct values the ties at the cut are
#: broken by value as documented (the engine's own tie order is unspecified).
FACET_FETCH = 1000


def sorted_facet(hits: Sequence[tuple[Any, int]], limit: int) -> list[tuple[Any, int]]:
    """Facet hits by count descending, then value ascending (numbers before strings), cut to
    ``limit``."""

    def key(hit: tuple[Any, int]) -> tuple[int, int, Any]:
        value, count = hit
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (-count, 0, value)
        return (-count, 1, str(value))

    return sorted(((plain(v), int(c)) for v, c in hits), key=key)[: max(0, limit)]
