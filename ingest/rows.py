"""Tabular rows to :class:`~ingest.records.Product` records, by a detected (or given) schema."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clipy_qdrant.errors import ConfigError
from ingest.records import Product
from ingest.schema import Schema, detect_schema
from ingest.values import (
    _Blank,
    clean_value,
    convert_value,
    id_string,
    render_template,
    template_fields,
)

DEFAULT_IMAGE_PATTERN = "{id}.jpg"

ColumnsArg = Mapping[str, str] | Sequence[str] | None

_URL = re.compile(r"https?://\S+", re.I)


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
