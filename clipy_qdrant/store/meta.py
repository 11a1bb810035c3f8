"""What a store remembers about its collection, and the check that a reader uses the same encoder.

Every backend keeps one :class:`StoreMeta` beside (or inside) its collection as JSON: the
encoder that wrote the vectors, the payload indexes created, the record of the hubness
values in the payloads, and whether the collection holds the lexical (BM25 sparse) vector
with the BM25 constants its vectors were written with. The JSON layout is versioned by :data:`META_VERSION`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.errors import ConfigError, EncoderMismatchError, StoreError
from clipy_qdrant.lexical import Bm25Params
from clipy_qdrant.store.options import CollectionOptions

#: Version of the clipy metadata layout written beside (or into) a collection.
META_VERSION = 1


@dataclass(frozen=True)
class HubnessInfo:
    """Collection-level record of the hubness values written into the payloads: each is the
    mean of the product image's ``top`` highest cosines with ``bank`` distinct product text
    vectors of the store; ``minimum`` is the smallest value (the query layer's bound).

    ``low`` is the threshold of the low-hubness band (a quantile of the values, with the
    ``hubness`` payload field indexed as float): the query layer searches the products with
    a value below it as a second image list, which tightens the bound of the products in
    neither list. ``None`` (a record written without it): the bound uses ``minimum`` alone.
    """

    top: int
    bank: int
    points: int
    minimum: float
    low: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "top": self.top,
            "bank": self.bank,
            "points": self.points,
            "minimum": self.minimum,
        }
        if self.low is not None:
            data["low"] = self.low
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HubnessInfo:
        low = data.get("low")
        return cls(
            int(data["top"]),
            int(data["bank"]),
            int(data["points"]),
            float(data["minimum"]),
            None if low is None else float(low),
        )


@dataclass
class StoreMeta:
    """What clipy remembers about a collection: the encoder that wrote it, its payload indexes
    (``{field: type}``), the hubness record (``None`` when absent or stale), the options it
    was created with (a layout without them: the defaults), ``lexical``: whether the collection
    was created with the lexical sparse vector (a collection created without it never gets
    one), ``bm25``: the constants of the stored lexical vectors (``None`` until the first
    is written), and ``fused``: whether the collection holds the fused vector of every product
    (:mod:`clipy_qdrant.store.fused`; a collection created without it never gets one)."""

    encoder: EncoderInfo
    indexed_fields: dict[str, str] = field(default_factory=dict)
    hubness: HubnessInfo | None = None
    options: CollectionOptions = field(default_factory=CollectionOptions)
    lexical: bool = False
    bm25: Bm25Params | None = None
    fused: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": META_VERSION,
            "encoder": {"name": self.encoder.name, "dim": self.encoder.dim},
            "indexed_fields": dict(sorted(self.indexed_fields.items())),
            "collection_options": self.options.to_json(),
        }
        if self.hubness is not None:
            data["hubness"] = self.hubness.to_json()
        if self.lexical:
            data["lexical"] = {"bm25": self.bm25.to_json() if self.bm25 is not None else None}
        if self.fused:
            data["fused"] = True
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> StoreMeta:
        """Read the JSON written by :meth:`to_json`; ``where`` names the store in errors."""
        try:
            enc = data["encoder"]
            hubness = data.get("hubness")
            lexical = data.get("lexical")
            bm25 = lexical.get("bm25") if isinstance(lexical, Mapping) else None
            return cls(
                EncoderInfo(str(enc["name"]), int(enc["dim"])),
                {str(k): str(v) for k, v in dict(data.get("indexed_fields") or {}).items()},
                HubnessInfo.from_json(hubness) if hubness else None,
                CollectionOptions.from_json(data.get("collection_options"), where),
                lexical=isinstance(lexical, Mapping),
                bm25=Bm25Params.from_json(bm25) if bm25 else None,
                fused=data.get("fused") is True,
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise StoreError(
                f"store {where} has unreadable clipy metadata ({exc!r}); recreate it with --recreate"
            ) from None


def check_same_encoder(where: str, meta: StoreMeta | None, wanted: EncoderInfo) -> None:
    """Raise unless ``wanted`` (name and dimension) is the encoder recorded in ``meta``:
    ``StoreError`` when there is no collection yet, ``EncoderMismatchError`` for another one."""
    if meta is None:
        raise StoreError(f"store {where} has no collection yet; run `clipy ingest` first")
    stored = meta.encoder
    if stored.name != wanted.name or stored.dim != wanted.dim:
        raise EncoderMismatchError(
            f"store {where} was written by encoder {stored.name!r} (dim {stored.dim}), "
            f"not {wanted.name!r} (dim {wanted.dim}); use encoder {stored.name!r}, "
            "or a new store / --recreate to re-ingest with the new one"
        )
