"""The base of every catalog reader: an iterable of :class:`~ingest.records.Product` records.

A reader yields its rows from ``_rows``; :class:`Catalog` applies ``limit`` and says how many
rows there are when that is cheaply known (``total``, ``len()``). The readers themselves live
in :mod:`ingest.readers` (parquet, image folder, Hugging Face), :mod:`ingest.text_tables`
(CSV, JSONL) and :mod:`ingest.platforms` (shop exports); :func:`ingest.readers.open_catalog`
picks one for a source.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.records import Product
    from ingest.rows import RowMapper
    from ingest.schema import Schema


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
