"""Payload field types: the index a field is worth, and whether a value fits its field's index.

:func:`infer_indexed_fields` picks the index of each payload field from a sample of products
(the rule of a keyword index, ``KEYWORD_*``, is also the rule of a descriptive attribute in
:mod:`ingest.schema`); :func:`conform_value` converts a value to the index type of its field or
says why it does not fit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipy_qdrant.store.base import FieldType
    from ingest.records import Product

#: A string field is a keyword (filterable) field if it has at most this many distinct values…
KEYWORD_MAX_DISTINCT = 1000
#: …and at most this share of its sampled values are distinct, and its values are short.
KEYWORD_MAX_DISTINCT_RATIO = 0.5
KEYWORD_MAX_MEAN_LENGTH = 40


def few_distinct(n_distinct: int, n: int) -> bool:
    """Whether ``n_distinct`` distinct values among ``n`` are few enough for a keyword field."""
    return n_distinct <= KEYWORD_MAX_DISTINCT and (
        n_distinct <= KEYWORD_MAX_DISTINCT_RATIO * n or n_distinct <= 2
    )


def value_kind(value: Any) -> str:
    """The type of a payload value: ``bool``, ``integer``, ``float``, ``text``, ``list`` or
    ``object``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    return "list" if isinstance(value, list) else "object"


def infer_indexed_fields(products: Iterable[Product]) -> dict[str, FieldType]:
    """Payload fields worth an index, from a sample of products.

    Integer fields -> ``integer``, float fields -> ``float``, boolean -> ``bool``; string fields
    with few distinct short values (see ``KEYWORD_*``) -> ``keyword``. Fields with mixed types,
    lists or objects get no index.
    """
    kinds: dict[str, set[str]] = {}
    distinct: dict[str, set[str]] = {}
    counts: Counter[str] = Counter()
    lengths: Counter[str] = Counter()
    for product in products:
        for key, value in product.metadata.items():
            kind = value_kind(value)
            kinds.setdefault(key, set()).add(kind)
            if kind == "text":
                values = distinct.setdefault(key, set())
                if len(values) <= KEYWORD_MAX_DISTINCT:
                    values.add(value)
                counts[key] += 1
                lengths[key] += len(value)
    fields: dict[str, FieldType] = {}
    for key, found in sorted(kinds.items()):
        if found == {"integer"}:
            fields[key] = "integer"
        elif found <= {"integer", "float"}:
            fields[key] = "float"
        elif found == {"bool"}:
            fields[key] = "bool"
        elif found == {"text"}:
            n = counts[key]
            if few_distinct(len(distinct[key]), n) and lengths[key] / n <= KEYWORD_MAX_MEAN_LENGTH:
                fields[key] = "keyword"
    return fields


def conform_value(value: Any, kind: str) -> tuple[Any, str | None]:
    """``(value as the index type kind wants, None)`` or ``(None, reason)``: ints and whole
    floats fit ``integer``, numbers ``float``, strings (or lists of them) ``keyword`` and
    ``text``, booleans ``bool``."""
    if kind == "integer" and not isinstance(value, bool):
        if isinstance(value, int):
            return value, None
        if isinstance(value, float) and value.is_integer():
            return int(value), None
        return None, f"{value!r} is not an integer"
    if kind == "float" and not isinstance(value, bool):
        if isinstance(value, int | float):
            return float(value), None
        return None, f"{value!r} is not a number"
    if kind in ("keyword", "text"):
        if isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            return value, None
        return None, f"{value!r} is not text"
    if kind == "bool":
        if isinstance(value, bool):
            return value, None
        return None, f"{value!r} is not true or false"
    return None, f"{value!r} is not {kind}"
