"""What a catalog's columns are: detected from the header and a sample of rows, explained.

:func:`detect_schema` picks, each with a one-line reason:

- the **id**: a column named like an id (``id``, ``sku``, ``product_id``, ``handle``…), else a
  column whose name ends in ``id`` and whose sampled values are unique, else none: the row
  number is the id (stable while rows keep their order);
- the **name** shown in results: ``title``, ``name``, ``productDisplayName``…, else a column
  named ``…name`` / ``…title``, else the most distinct short text column;
- the **image**: a column of image bytes (Hugging Face image struct), or of URLs or file paths
  (by name, ``image``, ``image_url``…, or by values, ``https://…`` or ``*.jpg``), marked as
  ``url`` or ``path``; relative paths resolve against the catalog file's folder. With none,
  the image folder rule applies (``{id}.jpg`` in ``images/`` beside the file);
- the **text** to embed: the name, then the descriptive attributes, ``{name}, {a} {b} …``. An
  attribute is a text column of few distinct short values (the rule of a keyword index,
  :func:`~ingest.field_types.infer_indexed_fields`) or a short text column named for a role
  below, other than the id, name and image; one whose value another attribute with more values
  determines (``subCategory`` by ``articleType``) is left out as redundant. Attributes are ordered by role, as a phrase reads (who, occasion, season, type,
  colour, material), then the others in column order. For the fashion catalog this gives
  ``{productDisplayName}, {gender} {usage} {season} {articleType} {baseColour}``;
- the **filterable fields** and their index types:
  :func:`~ingest.field_types.infer_indexed_fields` over the sample's products.

Every choice can be given instead (``id_column``, ``name_column``, ``image_column``,
``text_template``, ``image_pattern``). :func:`describe_catalog` renders the choices, the field
types and a few rendered texts (``clipy ingest CATALOG --dry-run``).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ingest.field_types import (
    KEYWORD_MAX_DISTINCT,
    KEYWORD_MAX_MEAN_LENGTH,
    few_distinct,
    infer_indexed_fields,
    value_kind,
)

#: Payload key naming the payload field that holds a product's display name (``title``…);
#: ingest writes it on every stored product, result rendering reads it.
NAME_FIELD_KEY = "name_field"

#: Rows looked at to detect a schema (and products looked at to infer payload indexes).
SAMPLE_ROWS = 2000

#: An attribute is redundant when another one with more values determines it in at least this
#: share of the rows holding both, over at least this many rows per determining value.
IMPLIED_MIN_SHARE = 0.99
IMPLIED_MIN_ROWS_PER_VALUE = 3

#: A column is an image column by its values when this share of them are URLs or image paths.
IMAGE_VALUE_MIN_SHARE = 0.8

#: Column names (lower case, letters and digits only) in order of preference.
ID_NAMES = (
    "id", "sku", "productid", "itemid", "handle", "variantsku", "styleid", "articleid", "asin",
    "gtin", "ean", "upc", "productcode", "itemcode", "code", "uuid", "key",
)  # fmt: skip
NAME_NAMES = (
    "title", "name", "productdisplayname", "displayname", "productname", "producttitle",
    "itemname", "itemtitle", "label",
)  # fmt: skip
IMAGE_NAMES = (
    "image", "imageurl", "imagepath", "imagefile", "imagelink", "imagesrc", "img", "imgurl",
    "mainimage", "featuredimage", "picture", "photo", "thumbnail", "imagename", "file",
    "filename", "path",
)  # fmt: skip
_WHO = {"gender", "sex", "department", "agegroup", "audience", "targetgroup"}
_OCCASION = {"usage", "occasion", "use", "usecase", "activity", "style"}
_SEASON = {"season", "seasons"}
_TYPE = {
    "articletype", "producttype", "itemtype", "type", "category", "subcategory",
    "mastercategory", "productcategory", "categoryname", "kind", "class", "family",
}  # fmt: skip
_COLOUR = {
    "basecolour", "basecolor", "colour", "color", "primarycolour", "primarycolor",
    "maincolour", "maincolor", "colourname", "colorname",
}  # fmt: skip
_MATERIAL = {"material", "fabric", "pattern"}
#: Attribute roles in the order a product phrase reads ("Men Casual Summer Shoes Black").
ATTRIBUTE_ROLES: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (role, frozenset(names))
    for role, names in (
        ("who", _WHO),
        ("occasion", _OCCASION),
        ("season", _SEASON),
        ("type", _TYPE),
        ("colour", _COLOUR),
        ("material", _MATERIAL),
    )
)

_URL = re.compile(r"https?://\S+", re.I)
#: ``style_id``, ``item-id``, ``styleId``, ``STYLE_ID``, ``variant_sku`` (not ``paid``, ``valid``).
_ID_SUFFIX = re.compile(r"(?:^|[_\-\s.])(?:id|ID|Id|sku|SKU)$|[a-z](?:Id|ID|Sku|SKU)$")
_IMAGE_PATH = re.compile(r"\S.*\.(jpe?g|png|webp|gif|bmp|tiff?)", re.I)

ImageKind = Literal["bytes", "url", "path", "folder"]


def normalise(name: str) -> str:
    """A column name for matching: lower case, letters and digits only (``Image_URL`` ->
    ``imageurl``)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


@dataclass(frozen=True)
class Choice:
    """One decision: the column chosen (``None``: none) and why."""

    column: str | None
    reason: str


@dataclass
class Schema:
    """The detected (or given) roles of a catalog's columns."""

    id: Choice
    name: Choice
    image: Choice
    #: ``bytes`` (in the row), ``url``, ``path`` (relative to the catalog's folder) or
    #: ``folder`` (no image column: ``image_pattern`` in the image folder).
    image_kind: ImageKind
    text_template: str
    text_reason: str
    #: The attributes the detected text names, in template order.
    attributes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": {"column": self.id.column, "reason": self.id.reason},
            "name": {"column": self.name.column, "reason": self.name.reason},
            "image": {
                "column": self.image.column,
                "kind": self.image_kind,
                "reason": self.image.reason,
            },
            "text": {"template": self.text_template, "reason": self.text_reason},
        }


# --------------------------------------------------------------------------- column statistics


@dataclass
class _Column:
    """What the sample says about one column."""

    name: str
    present: int = 0  # non-empty values
    kinds: Counter[str] = field(default_factory=Counter)
    distinct: set[Any] = field(default_factory=set)
    text_length: int = 0
    urls: int = 0
    image_paths: int = 0

    def add(self, value: Any) -> None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return
        if isinstance(value, float) and value != value:  # NaN
            return
        self.present += 1
        if isinstance(value, bool):
            self.kinds["bool"] += 1
        elif isinstance(value, int | float):
            self.kinds["number"] += 1
        elif isinstance(value, str):
            self.kinds["text"] += 1
            self.text_length += len(value)
            if _URL.fullmatch(value.strip()):
                self.urls += 1
            elif _IMAGE_PATH.fullmatch(value.strip()):
                self.image_paths += 1
        elif isinstance(value, bytes | bytearray | memoryview) or (
            isinstance(value, Mapping) and ("bytes" in value or "path" in value)
        ):
            self.kinds["image"] += 1
        else:
            self.kinds["other"] += 1
        if len(self.distinct) <= KEYWORD_MAX_DISTINCT and isinstance(value, str | int | float):
            self.distinct.add(value)

    @property
    def is_text(self) -> bool:
        return self.present > 0 and self.kinds["text"] == self.present

    @property
    def mean_length(self) -> float:
        return self.text_length / self.kinds["text"] if self.kinds["text"] else 0.0

    @property
    def unique(self) -> bool:
        return self.present > 0 and len(self.distinct) == self.present

    def image_share(self) -> float:
        return (self.urls + self.image_paths) / self.present if self.present else 0.0

    def is_short_text(self) -> bool:
        return (
            self.is_text
            and self.mean_length <= KEYWORD_MAX_MEAN_LENGTH
            and not self.urls
            and not self.image_paths
        )

    def is_keyword(self) -> bool:
        """Few distinct short text values: filterable, and a descriptive attribute."""
        return self.is_short_text() and few_distinct(len(self.distinct), self.present)


def _columns(header: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, _Column]:
    columns = {name: _Column(name) for name in header}
    for row in rows:
        for name, value in row.items():
            if name in columns:
                columns[name].add(value)
    return columns


def _by_name(
    columns: Mapping[str, _Column], names: Sequence[str], *, exclude: Iterable[str | None] = ()
) -> str | None:
    skip = set(exclude)
    found = {normalise(c): c for c in columns if c not in skip}
    return next((found[n] for n in names if n in found), None)


# --------------------------------------------------------------------------- detection


def detect_schema(
    header: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    id_column: str | None = None,
    name_column: str | None = None,
    image_column: str | None = None,
    text_template: str | None = None,
    image_pattern: str | None = None,
) -> Schema:
    """The roles of a catalog's columns from its ``header`` and a sample of ``rows`` (typed
    values); a given argument replaces that detection (see the module doc for the rules)."""
    columns = _columns(header, rows)
    id_choice = _detect_id(columns, id_column)
    image_choice, image_kind = _detect_image(columns, image_column, image_pattern, id_choice)
    name_choice = _detect_name(columns, name_column, (id_choice.column, image_choice.column))
    if text_template is not None:
        return Schema(
            id_choice, name_choice, image_choice, image_kind, text_template, "given (--text)"
        )
    roles = (id_choice.column, name_choice.column, image_choice.column)
    attributes, dropped = _attributes(columns, rows, exclude=roles)
    parts = []
    if name_choice.column is not None:
        parts.append("{" + name_choice.column + "}")
    if attributes:
        parts.append(" ".join("{" + a + "}" for a in attributes))
    if not parts:
        from clipy_qdrant.errors import ConfigError

        raise ConfigError(
            "cannot tell which columns describe the products (no name column and no "
            f"attribute columns among {', '.join(header)}); give the text with --text"
        )
    reason = "the name" if name_choice.column else "no name column"
    if attributes:
        reason += (
            f", then {len(attributes)} descriptive attribute(s) (text columns of few short "
            "values), ordered who, occasion, season, type, colour, material, others"
        )
    if dropped:
        reason += "; left out as implied by a finer attribute: " + ", ".join(
            f"{a} (by {b})" for a, b in dropped.items()
        )
    return Schema(
        id_choice, name_choice, image_choice, image_kind, ", ".join(parts), reason, attributes
    )


def _detect_id(columns: Mapping[str, _Column], given: str | None) -> Choice:
    if given is not None:
        return Choice(given, "given (--id-column)")
    named = _by_name(columns, ID_NAMES)
    if named is not None:
        return Choice(named, f"named like an id ({named})")
    for name, column in columns.items():
        if _ID_SUFFIX.search(name) and column.unique:
            return Choice(name, "its name ends in id and its values are unique")
    return Choice(None, "no id column (id, sku, product_id, handle…): the row number is the id")


def _detect_image(
    columns: Mapping[str, _Column],
    given: str | None,
    image_pattern: str | None,
    id_choice: Choice,
) -> tuple[Choice, ImageKind]:
    if given is not None:
        return Choice(given, "given"), _image_kind(columns.get(given))
    if image_pattern is not None:
        return Choice(None, f"given (--image-pattern {image_pattern})"), "folder"
    for name, column in columns.items():
        if column.present and column.kinds["image"] == column.present:
            return Choice(name, "holds the image bytes"), "bytes"
    named = _by_name(columns, IMAGE_NAMES, exclude=(id_choice.column,))
    if named is not None and (columns[named].is_text or columns[named].kinds["image"]):
        kind = _image_kind(columns[named])
        return Choice(named, f"named like an image column ({kind}s)"), kind
    for name, column in columns.items():
        if column.is_text and column.image_share() >= IMAGE_VALUE_MIN_SHARE:
            kind = _image_kind(column)
            return Choice(name, f"its values are image {kind}s"), kind
    return Choice(None, "no image column: the file named by the image pattern"), "folder"


def _image_kind(column: _Column | None) -> ImageKind:
    if column is None or not column.present:
        return "path"
    if column.kinds["image"]:
        return "bytes"
    return "url" if column.urls * 2 >= column.present else "path"


def _detect_name(
    columns: Mapping[str, _Column], given: str | None, exclude: Sequence[str | None]
) -> Choice:
    if given is not None:
        return Choice(given, "given")
    named = _by_name(columns, NAME_NAMES, exclude=exclude)
    if named is not None and (columns[named].is_text or not columns[named].present):
        return Choice(named, f"named like a product name ({named})")
    for name, column in columns.items():
        if (
            name not in exclude
            and column.is_text
            and not column.urls
            and not column.image_paths
            and re.search(r"(name|title)$", name, re.I)
        ):
            return Choice(name, "its name ends in name or title")
    candidates = [
        c
        for c in columns.values()
        if c.name not in exclude
        and c.is_text
        and not c.urls
        and not c.image_paths
        and 3 <= c.mean_length <= 200
        and len(c.distinct) >= 0.5 * c.present
        and len(c.distinct) > 2
    ]
    if candidates:
        best = max(candidates, key=lambda c: (len(c.distinct), c.mean_length))
        return Choice(best.name, "the text column with the most distinct values")
    return Choice(None, "no name column (title, name, …)")


def _attributes(
    columns: Mapping[str, _Column],
    rows: Sequence[Mapping[str, Any]],
    *,
    exclude: Sequence[str | None],
) -> tuple[list[str], dict[str, str]]:
    """The descriptive attributes in template order, and ``{left out: implied by}``."""
    found = [
        c.name
        for c in columns.values()
        if c.name not in exclude
        and (c.is_keyword() or (_role(c.name) < len(ATTRIBUTE_ROLES) and c.is_short_text()))
    ]
    dropped: dict[str, str] = {}
    finest_first = sorted(found, key=lambda n: -len(columns[n].distinct))
    for a in found:
        for b in finest_first:
            if b != a and _implies(rows, b, a, columns):
                dropped[a] = b
                break
    kept = [a for a in found if a not in dropped]
    order = {name: i for i, name in enumerate(kept)}
    return sorted(kept, key=lambda n: (_role(n), order[n])), dropped


def _role(name: str) -> int:
    """The position of a column's attribute role (``len(ATTRIBUTE_ROLES)``: no known role)."""
    key = normalise(name)
    return next(
        (i for i, (_, names) in enumerate(ATTRIBUTE_ROLES) if key in names), len(ATTRIBUTE_ROLES)
    )


def _implies(
    rows: Sequence[Mapping[str, Any]], b: str, a: str, columns: Mapping[str, _Column]
) -> bool:
    """Whether column ``b`` (with more values than ``a``) determines ``a`` in the sample."""
    n_b, n_a = len(columns[b].distinct), len(columns[a].distinct)
    if n_b <= n_a or n_a < 2:
        return False
    groups: defaultdict[Any, Counter[Any]] = defaultdict(Counter)
    for row in rows:
        va, vb = row.get(a), row.get(b)
        if isinstance(va, str) and va.strip() and isinstance(vb, str) and vb.strip():
            groups[vb][va] += 1
    both = sum(sum(c.values()) for c in groups.values())
    if not groups or both < IMPLIED_MIN_ROWS_PER_VALUE * len(groups):
        return False
    agreeing = sum(c.most_common(1)[0][1] for c in groups.values())
    return agreeing >= IMPLIED_MIN_SHARE * both


# --------------------------------------------------------------------------- explanation


@dataclass
class CatalogDescription:
    """What an ingest of a catalog would do: its schema, field types, a few product texts."""

    source: str
    kind: str
    schema: Schema
    #: ``{payload field: value type}`` over the sampled products (``integer``, ``float``,
    #: ``text``, ``bool``, ``list``, ``mixed``…).
    field_types: dict[str, str]
    indexed_fields: dict[str, str]
    examples: list[dict[str, str]]
    sampled: int
    #: Values of the sample that do not fit their field's type: ``"<where> field <f>: <why>"``.
    bad_values: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            **self.schema.to_dict(),
            "fields": {
                name: {"type": kind, "index": self.indexed_fields.get(name)}
                for name, kind in self.field_types.items()
            },
            "sampled_rows": self.sampled,
            "examples": self.examples,
            "bad_values": self.bad_values,
        }

    def lines(self) -> list[str]:
        """The description as text, one choice a line, for ``clipy ingest --dry-run``."""
        s = self.schema
        image = f"{s.image.column} ({s.image_kind})" if s.image.column else f"({s.image_kind})"
        out = [
            f"catalog: {self.source} ({self.kind}; {self.sampled:,} rows sampled)",
            f"id:      {s.id.column or '(row number)'}  - {s.id.reason}",
            f"name:    {s.name.column or '(none)'}  - {s.name.reason}",
            f"image:   {image}  - {s.image.reason}",
            f"text:    {s.text_template}  - {s.text_reason}",
            "fields:",
        ]
        width = max((len(n) for n in self.field_types), default=0)
        for name, kind in self.field_types.items():
            index = self.indexed_fields.get(name)
            filterable = f"filterable ({index})" if index else "not filterable"
            out.append(f"  {name:<{width}}  {kind:<8} {filterable}")
        if self.bad_values:
            out.append(f"values left out (they do not fit their field): {len(self.bad_values):,}")
            out.extend(f"  {line}" for line in self.bad_values[:5])
        out.append("texts:")
        for example in self.examples:
            out.append(f"  {example['id']}: {example['text']}")
        return out


def _value_type(values: set[str]) -> str:
    return next(iter(values)) if len(values) == 1 else "mixed"


def describe_catalog(catalog: Any, *, examples: int = 3) -> CatalogDescription:
    """Read the first products of a catalog opened by :func:`ingest.readers.open_catalog`
    and describe what an ingest would store: nothing is embedded or written."""
    sample = [p for p in itertools.islice(iter(catalog), SAMPLE_ROWS) if p.error is None]
    kinds: dict[str, set[str]] = {}
    for product in sample:
        for key, value in product.metadata.items():
            kinds.setdefault(key, set()).add(value_kind(value))
    schema = getattr(catalog, "schema", None)
    if schema is None:
        from clipy_qdrant.errors import ConfigError

        raise ConfigError(f"{catalog!r} has no detected schema to describe")
    return CatalogDescription(
        source=str(getattr(catalog, "source", "")),
        kind=str(getattr(catalog, "kind", "")),
        schema=schema,
        field_types={name: _value_type(found) for name, found in kinds.items()},
        indexed_fields=dict(infer_indexed_fields(sample)),
        examples=[{"id": p.product_id, "text": p.text} for p in sample[:examples]],
        sampled=len(sample),
        bad_values=[
            f"{p.where()} field {name}: {reason}"
            for p in sample
            for name, reason in p.value_errors.items()
        ],
    )
