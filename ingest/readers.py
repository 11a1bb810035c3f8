"""Catalog readers: every kind of source yields the same :class:`~ingest.records.Product` records.

:func:`open_catalog` picks the reader from the source:

- an existing ``.parquet`` file, or a folder holding parquet files (the Hugging Face layout,
  ``<dir>/data/*.parquet``): read with pyarrow in row batches; images stay JPEG bytes (decoded
  later by the pipeline, in threads);
- a ``.csv`` / ``.jsonl`` file with an image column (file paths relative to the file's
  folder, or URLs that :mod:`ingest.fetch` downloads) or an image folder (the Kaggle layout:
  ``styles.csv`` + ``images/<id>.jpg``; the folder defaults to ``images/`` beside the file);
- a folder of images (jpg / jpeg / png / webp, searched recursively): id = relative path;
- anything else is taken as a Hugging Face dataset id, read with ``datasets`` (streaming).

Rules shared by every reader (tabular sources):

- which column is the id, the name, the image, and the text to embed are detected from the
  header and the first rows (:mod:`ingest.schema`; ``catalog.schema`` holds the choices and
  their reasons); every choice can be given instead.
- ``product_id`` is the id column as a string (``12.0`` from a float column becomes ``"12"``),
  or the row number when the catalog has no id column; a missing / empty id gives
  ``product_id == ""`` (the pipeline reports and skips the row).
- metadata = every column except the id and the image, after ``columns`` (a list keeps only
  those columns; a mapping renames ``{source_name: new_name}`` and keeps the rest).
- empty values are left out of the metadata: ``None``, NaN and strings that are empty or blank.
  An absent payload key means "unknown", so a filter ``usage=Casual`` does not match it and
  Qdrant's is-empty condition does. Other strings are kept as they are (not stripped).
- types: ints stay ints (``year``), floats floats, bools bools; dates become ISO strings; raw
  bytes are dropped. A CSV or JSONL field has one type for the whole file (:func:`value_types`):
  numeric when at least ``NUMERIC_MIN_SHARE`` of its non-empty values are numbers (``int``
  when none of those has a fraction, else ``float``), else ``str``. Every value is converted
  to its field's type (``"2012"`` becomes ``2012`` in an integer field, ``7`` becomes ``"7"``
  in a string field); a value that does not fit (``2012a`` in an integer field) is left out of
  that product's payload and named in ``Product.value_errors``, which the pipeline reports
  with file, row and field; the row itself is stored. One bad cell so never turns a numeric
  column into text, where range filters would find nothing. Parquet and Hugging Face columns
  carry their own type.
- text = ``text_template`` rendered with ``str.format`` over the row (after renaming; the
  original names work too); empty values render as ``""``, runs of whitespace collapse and
  separators left dangling by empty values are dropped. The detected template is the product
  name followed by its descriptive attributes; for the fashion catalog that is
  :data:`DEFAULT_TEXT_TEMPLATE`, ``{productDisplayName}, {gender} {usage} {season}
  {articleType} {baseColour}`` ("Puma Men Black Shoes, Men Casual Summer Casual Shoes Black"):
  the text vector then knows what names leave out, so "women's summer casual tops" matches
  on usage and season too (docs/eval.md measures it). ``{name}`` is the default for an image
  folder (the file name with ``_``/``-`` as spaces). A template the user gives that names a
  column the source does not have is refused.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import decimal
import itertools
import json
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from clipy_qdrant.errors import ConfigError, InputError
from ingest.records import Product
from ingest.schema import SAMPLE_ROWS, Choice, Schema, detect_schema

NAME_TEXT_TEMPLATE = "{productDisplayName}"
#: The fashion catalog's attributes in its detected text (:mod:`ingest.schema`), after the name.
DEFAULT_TEXT_ATTRIBUTES = ("gender", "usage", "season", "articleType", "baseColour")
DEFAULT_TEXT_TEMPLATE = (
    NAME_TEXT_TEMPLATE + ", " + " ".join("{" + name + "}" for name in DEFAULT_TEXT_ATTRIBUTES)
)
IMAGE_FOLDER_TEXT_TEMPLATE = "{name}"
DEFAULT_IMAGE_PATTERN = "{id}.jpg"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp"})

ColumnsArg = Mapping[str, str] | Sequence[str] | None

#: A CSV / JSONL field is numeric when at least this share of its non-empty values are numbers.
NUMERIC_MIN_SHARE = 0.8

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)", re.I)
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
_URL = re.compile(r"https?://\S+", re.I)


# --------------------------------------------------------------------------- public entry


def open_catalog(
    source: str | Path,
    *,
    images: Path | None = None,
    image_pattern: str | None = None,
    id_column: str | None = None,
    text_template: str | None = None,
    columns: ColumnsArg = None,
    image_column: str | None = None,
    name_column: str | None = None,
    limit: int | None = None,
) -> Catalog:
    """Open a catalog source; iterate the result for :class:`Product` records.

    The id, name, image and text come from :func:`ingest.schema.detect_schema` over the header
    and the first rows (``catalog.schema`` says what was chosen and why); ``id_column``,
    ``name_column``, ``image_column``, ``text_template`` and ``image_pattern`` replace a
    choice. ``images`` is the image folder of a CSV/JSONL source (default ``images/`` beside
    it) and, when given, the base of relative image paths (else the catalog's folder);
    ``image_pattern`` names a product's file in it (``str.format`` over the row, default
    ``"{id}.jpg"``), used when the row has no image value. ``limit`` keeps the first N rows
    (bad rows count). Raises ``InputError`` for a source that cannot be read and
    ``ConfigError`` for arguments that do not fit it.
    """
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    if images is not None and not Path(images).is_dir():
        raise InputError(f"image folder {images} does not exist or is not a folder")
    path = Path(source)
    mapper_args: dict[str, Any] = {
        "id_column": id_column,
        "columns": columns,
        "image_column": image_column,
        "image_pattern": image_pattern,
        "text_template": text_template,
        "name_column": name_column,
    }
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return ParquetCatalog([path], images=images, limit=limit, **mapper_args)
        if suffix in (".csv", ".tsv"):
            return CsvCatalog(path, images=images, limit=limit, **mapper_args)
        if suffix in (".jsonl", ".ndjson"):
            return JsonlCatalog(path, images=images, limit=limit, **mapper_args)
        if suffix in IMAGE_EXTENSIONS:
            raise InputError(f"{path} is a single image; pass the folder that holds the images")
        raise InputError(
            f"{path}: unknown catalog file type {suffix!r} (expected .parquet, .csv, .jsonl)"
        )
    if path.is_dir():
        parquet_files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if parquet_files:
            return ParquetCatalog(parquet_files, images=images, limit=limit, **mapper_args)
        return ImageFolderCatalog(
            path,
            text_template=text_template or IMAGE_FOLDER_TEXT_TEMPLATE,
            columns=columns,
            limit=limit,
        )
    text = str(source)
    if path.suffix.lower() in {".parquet", ".csv", ".tsv", ".jsonl", ".ndjson"} or (
        not _HUB_ID.fullmatch(text)
    ):
        raise InputError(f"catalog {text} does not exist")
    return HubCatalog(text, images=images, limit=limit, **mapper_args)


def parse_columns(spec: str | None) -> ColumnsArg:
    """The ``columns`` argument from a command-line string.

    ``"gender,year"`` keeps only those columns; ``"title=productDisplayName,colour=baseColour"``
    renames (and keeps the rest); ``None`` / ``""`` keeps every column as it is. Mixing the two
    forms is refused.
    """
    if spec is None or not spec.strip():
        return None
    items = [item.strip() for item in spec.split(",") if item.strip()]
    pairs = [item.partition("=") for item in items]
    renames = [(old.strip(), new.strip()) for old, sep, new in pairs if sep]
    if not renames:
        return items
    if len(renames) != len(items) or any(not old or not new for old, new in renames):
        raise ConfigError(
            f"columns {spec!r}: give either names to keep (a,b) or renames (old=new,old2=new2)"
        )
    return dict(renames)


# --------------------------------------------------------------------------- value handling


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


# --------------------------------------------------------------------------- row -> Product


class RowMapper:
    """Turns a tabular row (``{column: raw value}``) into a :class:`Product`, by a
    :class:`~ingest.schema.Schema`.

    ``images`` is the image folder (given, or the default beside the file); relative image
    paths resolve against it when ``images_given``, else against ``base_dir`` (then the
    default folder when the file is there).
    """

    def __init__(
        self,
        schema: Schema,
        *,
        columns: ColumnsArg,
        image_pattern: str | None,
        images: Path | None,
        images_given: bool,
        base_dir: Path | None,
    ) -> None:
        self.schema = schema
        self.id_column = schema.id.column
        self.image_column = schema.image.column
        self.image_pattern = image_pattern or DEFAULT_IMAGE_PATTERN
        self.text_template = schema.text_template
        self.images = images
        self.images_given = images_given
        self.base_dir = base_dir
        #: ``{source column: int | float | str}`` for sources whose values carry no type of
        #: their own (CSV, JSONL); values are converted to it (see :func:`value_types`).
        self.value_types: dict[str, type] = {}
        self.rename: dict[str, str] = {}
        self.include: set[str] | None = None
        if isinstance(columns, Mapping):
            self.rename = {str(k): str(v) for k, v in columns.items()}
        elif columns is not None:
            if isinstance(columns, str):
                raise ConfigError("columns must be a list of names or a {old: new} mapping")
            self.include = {str(c) for c in columns}
        self.template_names = template_fields(self.text_template)
        self.pattern_names = template_fields(self.image_pattern)

    @property
    def display_field(self) -> str | None:
        """The payload field holding the product's name (after renaming), if it is stored."""
        name = self.schema.name.column
        if name is None or name in (self.id_column, self.image_column):
            return None
        renamed = self.rename.get(name, name)
        if self.include is not None and name not in self.include and renamed not in self.include:
            return None
        return renamed

    def check_columns(self, names: Iterable[str], source: str) -> None:
        """Refuse a template, id, name, image or column list naming a column ``source`` lacks."""
        present = set(names)
        known = present | {self.rename.get(n, n) for n in present} | {"id"}
        for role, column in (
            ("id", self.id_column),
            ("name", self.schema.name.column),
            ("image", self.image_column),
        ):
            if column is not None and column not in present:
                raise ConfigError(
                    f"{source}: no {role} column {column!r}; columns: {_names(present)}"
                )
        for name in self.template_names:
            if name not in known:
                raise ConfigError(
                    f"text template field {name!r} is not a column of {source}; "
                    f"columns: {_names(present)}"
                )
        missing = [c for c in self.include or () if c not in known]
        if missing:
            raise ConfigError(f"columns {missing} are not in {source}; columns: {_names(present)}")

    def product(
        self, raw: Mapping[str, Any], *, source: str, row: int, line: int | None = None
    ) -> Product:
        product_id = id_string(raw.get(self.id_column)) if self.id_column else str(row)
        value_errors: dict[str, str] = {}
        if self.value_types:
            raw = {
                key: self._typed(key, value, value_errors) if key != self.id_column else value
                for key, value in raw.items()
            }
        named = {self.rename.get(k, k): v for k, v in raw.items()}
        context = {**raw, **named, "id": product_id}
        metadata: dict[str, Any] = {}
        for key, value in raw.items():
            if key in (self.id_column, self.image_column):
                continue
            name = self.rename.get(key, key)
            if self.include is not None and key not in self.include and name not in self.include:
                continue
            cleaned = clean_value(value)
            if cleaned is not None:
                metadata[name] = cleaned
        product = Product(
            product_id=product_id, text="", metadata=metadata, row=row, line=line, source=source
        )
        product.value_errors = {
            self.rename.get(key, key): reason
            for key, reason in value_errors.items()
            if key != self.image_column
            and (
                self.include is None or key in self.include or self.rename.get(key) in self.include
            )
        }
        try:
            product.text = render_template(self.text_template, context)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            product.error = f"text template cannot be rendered: {exc}"
            return product
        self._attach_image(
            product, raw.get(self.image_column) if self.image_column else None, context
        )
        return product

    def _typed(self, key: str, value: Any, errors: dict[str, str]) -> Any:
        """``value`` as its field's type; ``None`` (and a reason in ``errors``) if it does not fit."""
        kind = self.value_types.get(key)
        if kind is None:
            return value
        converted, error = convert_value(value, kind)
        if error is not None:
            errors[key] = error
        return converted

    def _attach_image(self, product: Product, value: Any, context: Mapping[str, Any]) -> None:
        if isinstance(value, Mapping):  # HF Image feature: {"bytes": ..., "path": ...}
            data, name = value.get("bytes"), value.get("path")
            if data:
                product.image_bytes = bytes(data)
                return
            value = name
        if isinstance(value, bytes | bytearray | memoryview) and value:
            product.image_bytes = bytes(value)
            return
        if hasattr(value, "save") and hasattr(value, "convert"):  # a decoded PIL image
            image = value
            product.image_loader = lambda: image
            return
        if isinstance(value, str) and value.strip():
            if _URL.fullmatch(value.strip()):
                product.image_url = value.strip()
            else:
                product.image_path = self._resolve(Path(value.strip()))
            return
        if self.images is not None and product.product_id:
            try:
                name = self.image_pattern.format_map(_Blank(context))
            except (ValueError, KeyError, IndexError, AttributeError) as exc:
                product.error = f"image pattern {self.image_pattern!r} cannot be rendered: {exc}"
                return
            product.image_path = self.images / name

    def _resolve(self, path: Path) -> Path:
        if path.is_absolute():
            return path
        if self.images is not None and (self.images_given or self.base_dir is None):
            return self.images / path
        if self.base_dir is None:
            return path
        beside = self.base_dir / path
        if not beside.exists() and self.images is not None and (self.images / path).exists():
            return self.images / path
        return beside


def make_mapper(
    header: Sequence[str],
    sample: Sequence[Mapping[str, Any]],
    *,
    source: str,
    images: Path | None,
    images_given: bool,
    base_dir: Path | None,
    id_column: str | None,
    name_column: str | None,
    image_column: str | None,
    text_template: str | None,
    image_pattern: str | None,
    columns: ColumnsArg,
) -> RowMapper:
    """The :class:`RowMapper` of a tabular source: its schema detected from ``header`` and a
    ``sample`` of typed rows (the given arguments replace detections), its columns checked."""
    if text_template is not None:
        template_fields(text_template)  # a malformed template is refused before detection
    schema = detect_schema(
        header,
        sample,
        id_column=id_column,
        name_column=name_column,
        image_column=image_column,
        text_template=text_template,
        image_pattern=image_pattern,
    )
    mapper = RowMapper(
        schema,
        columns=columns,
        image_pattern=image_pattern,
        images=images,
        images_given=images_given,
        base_dir=base_dir,
    )
    mapper.check_columns(header, source)
    return mapper


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


# --------------------------------------------------------------------------- catalogs


class Catalog:
    """An iterable of :class:`Product`; ``total`` / ``len()`` give the rows when cheaply known."""

    kind = "catalog"

    #: The tabular sources' row mapper (``None`` for an image folder).
    mapper: RowMapper | None = None

    def __init__(self, source: str, limit: int | None) -> None:
        self.source = source
        self.limit = limit

    @property
    def schema(self) -> Schema | None:
        """What the columns are and why (tabular sources); see :mod:`ingest.schema`."""
        return self.mapper.schema if self.mapper is not None else None

    @property
    def display_field(self) -> str | None:
        """The payload field that holds a product's display name, if any."""
        return self.mapper.display_field if self.mapper is not None else "name"

    def _rows(self) -> Iterator[Product]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Product]:
        rows = self._rows()
        if self.limit is not None:
            rows = itertools.islice(rows, self.limit)
        return iter(rows)

    def _count(self) -> int | None:
        return None

    @property
    def total(self) -> int | None:
        """Rows this catalog will yield (after ``limit``), or ``None`` when unknown."""
        count = self._count()
        if count is None:
            return self.limit
        return count if self.limit is None else min(count, self.limit)

    def __len__(self) -> int:
        """The number of rows; ``TypeError`` (as for any unsized iterable) when unknown."""
        total = self.total
        if total is None:
            raise TypeError(f"the length of {self.source} is not known before reading it")
        return total

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, limit={self.limit})"


class ParquetCatalog(Catalog):
    """Parquet files in the Hugging Face layout, read in row batches with pyarrow."""

    mapper: RowMapper

    kind = "parquet"
    batch_rows = 1024

    def __init__(
        self, files: Sequence[Path], *, images: Path | None, limit: int | None, **mapper: Any
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.files = list(files)
        root = self.files[0].parent if len(self.files) == 1 else _common_root(self.files)
        super().__init__(str(self.files[0] if len(self.files) == 1 else root), limit)
        metas = []
        for file in self.files:
            try:
                metas.append(pq.ParquetFile(file))
            except Exception as exc:
                raise InputError(f"{file}: not a readable parquet file: {exc}") from None
        try:
            first = next(metas[0].iter_batches(batch_size=SAMPLE_ROWS), None)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{self.files[0]}: cannot read parquet data: {exc}") from None
        self.mapper = make_mapper(
            metas[0].schema_arrow.names,
            first.to_pylist() if first is not None else [],
            source=str(self.files[0]),
            images=images,
            images_given=images is not None,
            base_dir=root,
            **mapper,
        )
        for file, meta in zip(self.files, metas, strict=True):
            self.mapper.check_columns(meta.schema_arrow.names, str(file))
        if self.mapper.image_column is None and images is None:
            raise ConfigError(
                f"{self.files[0]}: no image column; name it with image_column or pass an image "
                "folder (files named by the image pattern)"
            )
        self._rows_per_file = [meta.metadata.num_rows for meta in metas]

    def _count(self) -> int:
        return sum(self._rows_per_file)

    def _rows(self) -> Iterator[Product]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for file in self.files:
            name = str(file)
            row = 0
            try:
                batches = pq.ParquetFile(file).iter_batches(batch_size=self.batch_rows)
                for batch in batches:
                    columns: dict[str, list[Any]] = {}
                    for field, column in zip(batch.schema, batch.columns, strict=True):
                        if (
                            pa.types.is_struct(field.type)
                            and field.name == self.mapper.image_column
                        ):
                            # Keep only what the image needs; do not decode anything here.
                            names = [field.type.field(i).name for i in range(field.type.num_fields)]
                            parts = {
                                n: column.field(n).to_pylist()
                                for n in ("bytes", "path")
                                if n in names
                            }
                            columns[field.name] = [
                                {n: parts[n][i] for n in parts} for i in range(len(column))
                            ]
                        else:
                            columns[field.name] = column.to_pylist()
                    keys = list(columns)
                    for values in zip(*(columns[k] for k in keys), strict=True):
                        yield self.mapper.product(
                            dict(zip(keys, values, strict=True)), source=name, row=row
                        )
                        row += 1
            except (OSError, pa.ArrowException) as exc:
                raise InputError(f"{name} row {row}: cannot read parquet data: {exc}") from None


def _common_root(files: Sequence[Path]) -> Path:
    parts = [f.parent.parts for f in files]
    common = []
    for group in zip(*parts, strict=False):
        if len(set(group)) != 1:
            break
        common.append(group[0])
    return Path(*common) if common else Path()


class _TextTableCatalog(Catalog):
    """A CSV or JSONL file: an image column (paths relative to the file's folder, or URLs), or
    an image folder (default ``images/`` beside the file) holding ``image_pattern`` files."""

    mapper: RowMapper

    def _setup(
        self,
        path: Path,
        header: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        *,
        images: Path | None,
        **mapper: Any,
    ) -> None:
        """Type the values (one type per field), detect the schema, build the row mapper."""
        self.path = path
        given = images is not None
        if images is None:
            beside = path.parent / "images"
            images = beside if beside.is_dir() else None
        types = value_types(header, rows)
        sample = [
            {k: convert_value(v, types[k])[0] if k in types else v for k, v in row.items()}
            for row in itertools.islice(rows, SAMPLE_ROWS)
        ]
        self.mapper = make_mapper(
            header,
            sample,
            source=str(path),
            images=images,
            images_given=given,
            base_dir=path.parent,
            **mapper,
        )
        types.pop(self.mapper.id_column or "", None)
        self.mapper.value_types = types
        if images is None and self.mapper.image_column is None:
            raise ConfigError(
                f"{path}: no image column and no image folder; pass --images DIR "
                "(default: images/ beside the file)"
            )


class CsvCatalog(_TextTableCatalog):
    """A CSV file (Kaggle ``styles.csv`` layout). Cells are typed per column (see module doc).

    Rows with more cells than the header have the surplus joined into the last column: the
    Kaggle ``styles.csv`` has unquoted commas in its last column, ``productDisplayName``.
    """

    kind = "csv"

    def __init__(
        self, path: Path, *, images: Path | None, limit: int | None, **mapper: Any
    ) -> None:
        self._header, self._records = _read_csv(path)
        super().__init__(str(path), limit)
        rows = [self._raw(cells) for _, cells in self._records]
        self._setup(path, self._header, rows, images=images, **mapper)

    def _count(self) -> int:
        return len(self._records)

    def _raw(self, cells: list[str]) -> dict[str, Any]:
        width = len(self._header)
        if len(cells) > width:
            cells = [*cells[: width - 1], ",".join(cells[width - 1 :])]
        return dict(zip(self._header, cells, strict=False))

    def _rows(self) -> Iterator[Product]:
        for row, (line, cells) in enumerate(self._records):
            yield self.mapper.product(self._raw(cells), source=self.source, row=row, line=line)


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if not header:
                raise InputError(f"{path}: empty CSV file (no header row)")
            records: list[tuple[int, list[str]]] = []
            start = reader.line_num + 1
            for cells in reader:
                if cells:  # blank lines are not rows
                    records.append((start, cells))
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise InputError(f"{path} line {reader.line_num}: malformed CSV: {exc}") from None
    return [h.strip() for h in header], records


class JsonlCatalog(_TextTableCatalog):
    """A JSON Lines file: one object per line (``null`` = empty). Each field gets one type for
    the whole file (see the module doc): a ``"2012a"`` among a field's numbers is reported and
    left out, ``"2012"`` becomes ``2012``."""

    kind = "jsonl"

    def __init__(
        self, path: Path, *, images: Path | None, limit: int | None, **mapper: Any
    ) -> None:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc})") from None
        super().__init__(str(path), limit)
        #: (line number, the object or None, the reason it is not one).
        self._parsed = [
            _parse_json_line(n, text) for n, text in enumerate(lines, 1) if text.strip()
        ]
        objects = [value for _, value, _ in self._parsed if value is not None]
        fields = list(dict.fromkeys(key for value in objects for key in value))
        self._setup(path, fields, objects, images=images, **mapper)

    def _count(self) -> int:
        return len(self._parsed)

    def _rows(self) -> Iterator[Product]:
        for row, (number, value, error) in enumerate(self._parsed):
            if value is not None:
                yield self.mapper.product(value, source=self.source, row=row, line=number)
            else:
                yield Product(
                    product_id="", text="", row=row, line=number, source=self.source, error=error
                )


def _parse_json_line(number: int, text: str) -> tuple[int, dict[str, Any] | None, str | None]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        return number, None, f"invalid JSON: {exc}"
    if not isinstance(value, dict):
        return number, None, f"expected a JSON object, got {type(value).__name__}"
    return number, value, None


class ImageFolderCatalog(Catalog):
    """Every jpg / jpeg / png / webp file under a folder (recursively, sorted).

    id = path relative to the folder (``/``-separated); metadata: ``file`` (that path), ``folder``
    (its parent folder, when not top-level) and ``name`` (the file name without extension,
    ``_`` and ``-`` as spaces), which is also the default text.
    """

    kind = "images"

    def __init__(
        self, root: Path, *, text_template: str, columns: ColumnsArg, limit: int | None
    ) -> None:
        super().__init__(str(root), limit)
        self.root = root
        self.files = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not self.files:
            raise InputError(f"{root}: no parquet, jpg, jpeg, png or webp files in this folder")
        self.text_template = text_template
        unknown = [
            n for n in template_fields(text_template) if n not in ("file", "folder", "name", "id")
        ]
        if unknown:
            raise ConfigError(
                f"text template fields {unknown} do not exist for an image folder "
                "(available: id, file, folder, name)"
            )
        self.columns = columns

    @property
    def schema(self) -> Schema:
        """The fixed roles of an image folder's fields, in the form of a detected schema."""
        return Schema(
            id=Choice(None, "the file's path relative to the folder"),
            name=Choice("name", "the file name, _ and - as spaces"),
            image=Choice("file", "every jpg / jpeg / png / webp file under the folder"),
            image_kind="path",
            text_template=self.text_template,
            text_reason="the file name" if self.text_template == "{name}" else "given (--text)",
        )

    def _count(self) -> int:
        return len(self.files)

    def _rows(self) -> Iterator[Product]:
        for row, file in enumerate(self.files):
            rel = file.relative_to(self.root).as_posix()
            folder = file.parent.relative_to(self.root).as_posix()
            metadata: dict[str, Any] = {
                "file": rel,
                "name": " ".join(re.sub(r"[_\-]+", " ", file.stem).split()),
            }
            if folder != ".":
                metadata["folder"] = folder
            text = render_template(self.text_template, {**metadata, "id": rel})
            if isinstance(self.columns, Mapping):
                metadata = {self.columns.get(k, k): v for k, v in metadata.items()}
            elif self.columns is not None:
                metadata = {k: v for k, v in metadata.items() if k in set(self.columns)}
            yield Product(
                product_id=rel,
                text=text,
                metadata=metadata,
                image_path=file,
                row=row,
                source=str(self.root),
            )


class HubCatalog(Catalog):
    """A Hugging Face dataset id, streamed with ``datasets`` (split ``train``)."""

    mapper: RowMapper

    kind = "hub"

    #: Rows streamed to detect the schema (streaming makes every row a download).
    sample_rows = 200

    def __init__(
        self, dataset_id: str, *, images: Path | None, limit: int | None, **mapper: Any
    ) -> None:
        super().__init__(dataset_id, limit)
        self._dataset = self._load(dataset_id)
        sample = list(itertools.islice(iter(self._dataset), self.sample_rows))
        features = getattr(self._dataset, "features", None) or {}
        header = list(features) or list(dict.fromkeys(k for row in sample for k in row))
        self.mapper = make_mapper(
            header,
            sample,
            source=dataset_id,
            images=images,
            images_given=images is not None,
            base_dir=None,
            **mapper,
        )

    def _load(self, dataset_id: str) -> Any:
        try:
            import datasets
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise InputError(
                f"reading {dataset_id!r} needs the `datasets` package: {exc}"
            ) from None
        try:
            dataset = datasets.load_dataset(dataset_id, split="train", streaming=True)
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(
                f"cannot load {dataset_id!r}: not a file or folder here, and the Hugging Face hub "
                f"could not provide it (offline, HF_HUB_OFFLINE=1, or no such dataset): {first}"
            ) from None
        features = getattr(dataset, "features", None) or {}
        for name, feature in features.items():
            if hasattr(datasets, "Image") and isinstance(feature, datasets.Image):
                # Keep JPEG bytes; the pipeline decodes them in threads.
                dataset = dataset.cast_column(name, datasets.Image(decode=False))
        return dataset

    def _count(self) -> int | None:
        with contextlib.suppress(Exception):
            return int(self._dataset.info.splits["train"].num_examples)
        return None

    def _rows(self) -> Iterator[Product]:
        for row, raw in enumerate(self._dataset):
            yield self.mapper.product(raw, source=self.source, row=row)
