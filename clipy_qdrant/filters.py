"""Payload filters: a small backend-neutral model, a parser for ``field op value`` strings,
and a pure reference matcher (used by tests and the exact oracle).

Syntax accepted by :func:`parse_filter` (one condition per string; several are AND-ed):

- ``gender=Men``                 equality
- ``baseColour=Red,Blue``        any of
- ``season!=Summer`` / ``baseColour!=Red,Blue``   negation
- ``year>=2015``, ``year<2012``, ``year>2010``, ``year<=2016``   numeric range
- ``year=2012..2015``            inclusive numeric range

Values of fields declared integer (``year``) are parsed as numbers; everything else is a string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clipy_qdrant.errors import FilterError

#: Fields whose values are integers in the payload (parsed as numbers in filters).
INTEGER_FIELDS: frozenset[str] = frozenset({"year"})

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Match:
    """``field`` equals one of ``values`` (a single value is equality)."""

    field: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Range:
    """Numeric range on ``field``; unset bounds are open."""

    field: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


Condition = Match | Range


@dataclass(frozen=True)
class Filter:
    """Conjunction of ``must`` conditions and negated ``must_not`` conditions."""

    must: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.must or self.must_not)

    def and_(self, other: Filter | None) -> Filter:
        if other is None:
            return self
        return Filter(self.must + other.must, self.must_not + other.must_not)


_EXPR = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$")


def _coerce(field_name: str, raw: str, expr: str) -> Scalar:
    if field_name in INTEGER_FIELDS:
        try:
            return int(raw)
        except ValueError:
            raise FilterError(
                f"filter {expr!r}: {field_name} needs a whole number, got {raw!r}"
            ) from None
    return raw


def _number(raw: str, expr: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise FilterError(f"filter {expr!r}: {raw!r} is not a number") from None
    if math.isnan(value):
        raise FilterError(f"filter {expr!r}: {raw!r} is not a number")
    return value


def parse_condition(expr: str) -> tuple[Condition, bool]:
    """Parse one ``field op value`` string; returns the condition and whether it is negated."""
    m = _EXPR.match(expr)
    if not m:
        raise FilterError(
            f"filter {expr!r} is not of the form FIELD=VALUE, FIELD!=A,B, FIELD>=N or FIELD=N..M"
        )
    name, op, raw = m.groups()
    if raw == "":
        raise FilterError(f"filter {expr!r} has no value")
    if op in (">", ">=", "<", "<="):
        bound = _number(raw, expr)
        key = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}[op]
        return Range(name, **{key: bound}), False
    if op == "=" and ".." in raw:
        lo, _, hi = raw.partition("..")
        return Range(name, gte=_number(lo, expr), lte=_number(hi, expr)), False
    values = tuple(_coerce(name, v.strip(), expr) for v in raw.split(",") if v.strip() != "")
    if not values:
        raise FilterError(f"filter {expr!r} has no value")
    return Match(name, values), op == "!="


def parse_filter(exprs: Iterable[str] | None) -> Filter | None:
    """Parse ``--filter`` strings into one :class:`Filter` (AND of all); ``None`` if empty."""
    must: list[Condition] = []
    must_not: list[Condition] = []
    for expr in exprs or ():
        cond, negated = parse_condition(expr)
        (must_not if negated else must).append(cond)
    if not must and not must_not:
        return None
    return Filter(tuple(must), tuple(must_not))


def filter_from_mapping(rule: Mapping[str, Any]) -> Filter | None:
    """Build a filter from ``{"field": value | [values] | {"gte": .., "lte": ..}}`` (AND of all).

    A bound that is not a finite number, an unknown bound name, or a value that is not a
    string, number or boolean is a :class:`FilterError` naming the field.
    """
    must: list[Condition] = []
    for name, spec in rule.items():
        if isinstance(spec, Mapping):
            must.append(Range(name, **_bounds(name, spec)))
            continue
        values = (spec,) if isinstance(spec, str | int | float | bool) else spec
        if not isinstance(values, list | tuple) or not values:
            raise FilterError(
                f"filter on {name!r}: expected a value or a non-empty list, got {spec!r:.60}"
            )
        for value in values:
            if not isinstance(value, str | int | float | bool) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                raise FilterError(
                    f"filter on {name!r}: {value!r:.60} is not a string, number or boolean"
                )
        must.append(Match(name, tuple(values)))
    return Filter(tuple(must)) if must else None


def _bounds(name: str, spec: Mapping[str, Any]) -> dict[str, float]:
    bounds: dict[str, float] = {}
    for key, value in spec.items():
        if key not in ("gt", "gte", "lt", "lte"):
            raise FilterError(f"filter on {name!r}: unknown bound {key!r} (use gt, gte, lt, lte)")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise FilterError(
                f"filter on {name!r}: bound {key} must be a finite number, got {value!r:.60}"
            )
        bounds[key] = float(value)
    if not bounds:
        raise FilterError(f"filter on {name!r}: a range needs at least one of gt, gte, lt, lte")
    return bounds


def _condition_holds(cond: Condition, payload: Mapping[str, Any]) -> bool:
    value = payload.get(cond.field)
    if isinstance(cond, Match):
        if isinstance(value, list):
            return any(v in cond.values for v in value)
        return value in cond.values
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (
        (cond.gt is None or value > cond.gt)
        and (cond.gte is None or value >= cond.gte)
        and (cond.lt is None or value < cond.lt)
        and (cond.lte is None or value <= cond.lte)
    )


def matches(flt: Filter | None, payload: Mapping[str, Any]) -> bool:
    """Reference semantics of a filter on one payload (what every backend must agree with)."""
    if flt is None:
        return True
    return all(_condition_holds(c, payload) for c in flt.must) and not any(
        _condition_holds(c, payload) for c in flt.must_not
    )


def fields_of(flt: Filter | None) -> Sequence[str]:
    if flt is None:
        return ()
    return tuple(c.field for c in (*flt.must, *flt.must_not))


__all__ = [
    "INTEGER_FIELDS",
    "Condition",
    "Filter",
    "Match",
    "Range",
    "fields_of",
    "filter_from_mapping",
    "matches",
    "parse_condition",
    "parse_filter",
]
