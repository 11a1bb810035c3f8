"""Catalog values: cleaning, one type per field, and the text template.

- :func:`clean_value`: a raw value as it goes into the payload (``None``: leave it out);
- :func:`value_types` / :func:`convert_value`: one type per field of a CSV / JSONL source and
  each value converted to it (``NUMERIC_MIN_SHARE``; see :mod:`ingest.readers`);
- :func:`render_template`: the text to embed, rendered over a row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from clipy_qdrant.errors import ConfigError

#: A CSV / JSONL field is numeric when at least this share of its non-empty values are numbers.
NUMERIC_MIN_SHARE = 0.8

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)", re.I)


def clean_value(value: Any) -> Any:
    """A metadata value as it goes into the payload, or ``None`` for "leave it out"."""
    if value is None:
        return None
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bytes | bytearray | memoryview):
        return None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        with contextlib.suppress(ValueError, TypeError):
            return clean_value(value.item())
    if isinstance(value, Mapping):
        cleaned = {str(k): clean_value(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v is not None} or None
    if isinstance(value, list | tuple):
        items = [v for v in (clean_value(v) for v in value) if v is not None]
        return items or None
    return str(value)


def id_string(value: Any) -> str:
    """A product id as a string; ``""`` when missing (``None``, NaN, blank)."""
    value = clean_value(value)
    if value is None:
        return ""
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value).strip()


class _Blank(dict[str, Any]):
    """Format context in which missing or empty values render as ``""``."""

    def __missing__(self, key: str) -> str:
        return ""


def template_fields(template: str) -> list[str]:
    """The top-level field names a ``str.format`` template uses (``{a.b}`` -> ``a``)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"text template {template!r} is malformed: {exc}") from None
    names: list[str] = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not base or base.isdigit():
            raise ConfigError(f"text template {template!r}: use named fields like {{title}}")
        names.append(base)
    return names


_REPEATED_SEPARATOR = re.compile(r"\s*[,;|](?=\s*[,;|])")
_SPACE_BEFORE_COMMA = re.compile(r"\s+(?=[,;])")
_EDGE_SEPARATOR = re.compile(r"^\s*[,;|]\s*|\s*[,;|]\s*$")


def render_template(template: str, values: Mapping[str, Any]) -> str:
    """Render ``template`` over ``values`` (empty values as ``""``), whitespace collapsed and
    separators (``, ; |``) that empty values left dangling dropped."""
    context = _Blank({k: ("" if clean_value(v) is None else v) for k, v in values.items()})
    text = " ".join(template.format_map(context).split())
    text = _SPACE_BEFORE_COMMA.sub("", _REPEATED_SEPARATOR.sub("", text))
    return _EDGE_SEPARATOR.sub("", text)


def _value_kind(value: Any) -> str | None:
    """``"int"``, ``"float"``, ``"bool"``, ``"text"`` (a string that is no number), ``"other"``
    (lists, objects), or ``None`` for an empty value; numeric strings count as numbers."""
    value = clean_value(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        text = value.strip()
        if _INT.fullmatch(text):
            return "int"
        if _FLOAT.fullmatch(text):
            return "float"
        return "text"
    return "other"


def value_types(
    header: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    min_share: float = NUMERIC_MIN_SHARE,
) -> dict[str, type]:
    """One type per field of a CSV / JSONL source: ``int``, ``float`` or ``str``.

    A field is numeric when at least ``min_share`` of its non-empty values are numbers (or
    numeric strings): ``int`` when none of them has a fraction, else ``float``. Otherwise it is
    ``str``, unless all its values are booleans or any is a list or object: such fields keep
    their values as they are (and get no entry).
    """
    counts: dict[str, Counter[str]] = {name: Counter() for name in header}
    for row in rows:
        for name, value in row.items():
            kind = _value_kind(value)
            if kind is not None:
                counts.setdefault(name, Counter())[kind] += 1
    types: dict[str, type] = {}
    for name, found in counts.items():
        total = sum(found.values())
        numbers = found["int"] + found["float"]
        if found["other"] or (total and found["bool"] == total):
            continue
        if total and numbers >= min_share * total:
            types[name] = float if found["float"] else int
        else:
            types[name] = str
    return types


_KIND_NAMES = {int: "an integer", float: "a number", str: "text"}


def convert_value(value: Any, kind: type) -> tuple[Any, str | None]:
    """``(value as kind, None)``, or ``(None, reason)`` when it does not fit; empty stays ``None``.

    Numbers and numeric strings fit ``float``; whole ones fit ``int``; anything scalar fits
    ``str`` (numbers as written, booleans as ``true`` / ``false``).
    """
    cleaned = clean_value(value)
    if cleaned is None:
        return None, None
    if kind is str:
        if isinstance(value, str):
            return value, None
        if isinstance(cleaned, bool):
            return ("true" if cleaned else "false"), None
        if isinstance(cleaned, int | float):
            return str(cleaned), None
        return cleaned, None
    number: int | float | None = None
    if isinstance(cleaned, bool):
        number = None
    elif isinstance(cleaned, int | float):
        number = cleaned
    elif isinstance(cleaned, str):
        text = cleaned.strip()
        if _INT.fullmatch(text):
            number = int(text)
        elif _FLOAT.fullmatch(text):
            number = float(text)
    if number is not None and kind is float:
        return float(number), None
    if number is not None and kind is int:
        if isinstance(number, int):
            return number, None
        if math.isfinite(number) and number.is_integer():
            return int(number), None
    shown = value if isinstance(value, str) else cleaned
    return None, f"{shown!r} is not {_KIND_NAMES.get(kind, kind.__name__)}"
