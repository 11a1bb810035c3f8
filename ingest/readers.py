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
import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from clipy_qdrant.errors import ConfigError, InputError
from ingest.records import Product
from ingest.rows import DEFAULT_IMAGE_PATTERN, ColumnsArg, RowMapper, make_mapper
from ingest.schema import SAMPLE_ROWS, Choice, Schema
from ingest.values import (
    NUMERIC_MIN_SHARE,
    clean_value,
    convert_value,
    id_string,
    render_template,
    template_fields,
    value_types,
)

__all__ = [
    "DEFAULT_IMAGE_PATTERN",
    "DEFAULT_TEXT_TEMPLATE",
    "NAME_TEXT_TEMPLATE",
    "NUMERIC_MIN_SHARE",
    "Catalog",
    "ColumnsArg",
    "CsvCatalog",
    "HubCatalog",
    "ImageFolderCatalog",
    "JsonlCatalog",
    "ParquetCatalog",
    "RowMapper",
    "clean_value",
    "id_string",
    "open_catalog",
    "parse_columns",
    "render_template",
    "value_types",
]

NAME_TEXT_TEMPLATE = "{productDisplayName}"
#: The fashion catalog's attributes in its detected text (:mod:`ingest.schema`), after the name.
DEFAULT_TEXT_ATTRIBUTES = ("gender", "usage", "season", "articleType", "baseColour")
DEFAULT_TEXT_TEMPLATE = (
    NAME_TEXT_TEMPLATE + ", " + " ".join("{" + name + "}" for name in DEFAULT_TEXT_ATTRIBUTES)
)
IMAGE_FOLDER_TEXT_TEMPLATE = "{name}"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp"})

_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


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
            # Shopify and WooCommerce exports are recognised by their header.
            from ingest.platforms import open_platform_export

            export = open_platform_export(path, text_template=text_template, limit=limit)
            if export is not None:
                return export
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
