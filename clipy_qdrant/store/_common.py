"""Logic shared by the two store backends: metadata, payloads, vector checks, error wording."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.errors import EncoderMismatchError, StoreError
from clipy_qdrant.filters import Scalar
from clipy_qdrant.store.base import (
    CONTENT_HASH_KEY,
    PRODUCT_ID_KEY,
    VECTOR_NAMES,
    FieldType,
    HubnessInfo,
    PointRecord,
)

#: Version of the clipy metadata layout written beside (or into) a collection.
META_VERSION = 1

#: HNSW defaults: Qdrant's m / ef_construct; hnsw_ef 256 at search. benchmarks/bench_store.py
#: at catalog scale (44,072 synthetic products x 2 x 512-d, this 2-core machine): recall@10
#: unfiltered 0.9995 / 1.000 and filtered 0.988-0.991 / 0.999 at hnsw_ef 128 / 256, p50
#: 1.0-1.4 ms / 1.2-1.6 ms; so 256 buys the filtered case its ≥ 0.99 for ~0.3 ms.
DEFAULT_HNSW_M = 16
DEFAULT_HNSW_EF_CONSTRUCT = 100
DEFAULT_HNSW_EF = 256

#: Points sent to the engine per write call (bounded memory for big ingests).
UPSERT_BATCH = 512

FIELD_TYPES: frozenset[str] = frozenset({"keyword", "integer", "float", "text", "bool"})


@dataclass
class StoreMeta:
    """What clipy remembers about a collection: the encoder that wrote it and its indexes."""

    encoder: EncoderInfo
    indexed_fields: dict[str, str] = field(default_factory=dict)
    hubness: HubnessInfo | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": META_VERSION,
            "encoder": {"name": self.encoder.name, "dim": self.encoder.dim},
            "indexed_fields": dict(sorted(self.indexed_fields.items())),
        }
        if self.hubness is not None:
            data["hubness"] = self.hubness.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> StoreMeta:
        try:
            enc = data["encoder"]
            hubness = data.get("hubness")
            return cls(
                EncoderInfo(str(enc["name"]), int(enc["dim"])),
                {str(k): str(v) for k, v in dict(data.get("indexed_fields") or {}).items()},
                HubnessInfo.from_json(hubness) if hubness else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(
                f"store {where} has unreadable clipy metadata ({exc!r}); recreate it with --recreate"
            ) from None


def group_by_value(values: Mapping[str, Any]) -> dict[Any, list[str]]:
    """``{value: [product_id, …]}``: one engine call sets one payload on many points."""
    groups: dict[Any, list[str]] = {}
    for product_id, value in values.items():
        groups.setdefault(plain(value), []).append(str(product_id))
    return groups


def check_field_types(indexed_fields: Mapping[str, FieldType] | None) -> dict[str, str]:
    fields = dict(indexed_fields or {})
    for name, kind in fields.items():
        if kind not in FIELD_TYPES:
            raise StoreError(
                f"payload index {name!r} has unknown type {kind!r}; use one of {sorted(FIELD_TYPES)}"
            )
    return {str(k): str(v) for k, v in fields.items()}


def mismatch_error(where: str, stored: EncoderInfo, wanted: EncoderInfo) -> EncoderMismatchError:
    return EncoderMismatchError(
        f"store {where} was written by encoder {stored.name!r} (dim {stored.dim}), "
        f"not {wanted.name!r} (dim {wanted.dim}); use encoder {stored.name!r}, "
        "or a new store / --recreate to re-ingest with the new one"
    )


def check_same_encoder(where: str, stored: EncoderInfo | None, wanted: EncoderInfo) -> None:
    """Raise unless ``wanted`` is the encoder recorded in the store."""
    if stored is None:
        raise StoreError(f"store {where} has no collection yet; run `clipy ingest` first")
    if stored.name != wanted.name or stored.dim != wanted.dim:
        raise mismatch_error(where, stored, wanted)


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


def payload_of(point: PointRecord) -> dict[str, Any]:
    """Stored payload: product metadata plus the store's own keys."""
    payload = {str(k): plain(v) for k, v in point.payload.items()}
    payload[PRODUCT_ID_KEY] = str(point.product_id)
    payload[CONTENT_HASH_KEY] = point.content_hash
    return payload


def vectors_of(point: PointRecord, dim: int) -> dict[str, np.ndarray]:
    """The point's named vectors as float32 (dim,), checked for name, shape and finiteness."""
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
    return out


def query_vector(vector: np.ndarray, dim: int | None, using: str) -> np.ndarray:
    if using not in VECTOR_NAMES:
        raise StoreError(f"unknown vector {using!r}; use one of {VECTOR_NAMES}")
    arr = np.asarray(vector, dtype=np.float32).reshape(-1)
    if dim is not None and arr.shape[0] != dim:
        raise StoreError(f"query vector has dim {arr.shape[0]}, the store expects {dim}")
    if not np.all(np.isfinite(arr)):
        raise StoreError("query vector is not finite; check the encoder output")
    return arr


def stored_vectors(raw: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    if not raw:
        return {}
    return {str(k): np.asarray(v, dtype=np.float32) for k, v in raw.items()}


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
