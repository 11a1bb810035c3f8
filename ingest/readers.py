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

The parquet, image-folder and Hugging Face readers live here; the CSV and JSONL readers in
:mod:`ingest.text_tables`, the shop exports in :mod:`ingest.platforms`, and the base they share
in :mod:`ingest.catalog`.

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
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from clipy_qdrant.errors import ConfigError, InputError
from ingest.catalog import Catalog
from ingest.records import Product
from ingest.rows import DEFAULT_IMAGE_PATTERN, ColumnsArg, RowMapper, make_mapper
from ingest.schema import SAMPLE_ROWS, Choice, Schema
from ingest.text_tables import CsvCatalog, JsonlCatalog
from ingest.values import (
    NUMERIC_MIN_SHARE,
    clean_value,
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


# --------------------------------------------------------------------------- readers


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
