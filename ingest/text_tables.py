"""The CSV and JSONL catalog readers: a text file of rows whose values are typed per field.

Each field gets one type for the whole file (:func:`ingest.values.value_types`), every value is
converted to it, and the schema is detected over the typed first rows (:mod:`ingest.schema`);
the module doc of :mod:`ingest.readers` states the rules every reader shares.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from clipy_qdrant.errors import ConfigError, InputError
from ingest.catalog import Catalog
from ingest.records import Product
from ingest.rows import RowMapper, make_mapper
from ingest.schema import SAMPLE_ROWS
from ingest.values import convert_value, value_types


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


def _csv_delimiter(path: Path) -> str:
    """``\t`` for .tsv; else the one of ``,``, ``;``, ``\t``, ``|`` that splits the header
    into the most columns (spreadsheets in many locales write ``;``), ``,`` on a tie."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = handle.readline()
    except (OSError, UnicodeDecodeError):
        return ","
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] > 0 else ","


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    delimiter = _csv_delimiter(path)
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
