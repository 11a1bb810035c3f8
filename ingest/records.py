"""The product record every catalog reader yields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from clipy_qdrant.encoders.images import decode_image


def place(source: str | None, line: int | None, row: int | None) -> str:
    """Where an input row is, for messages: ``styles.csv line 7`` (a text file's line),
    ``train.parquet row 5`` (a row number), or just the source (``input`` when unnamed)."""
    if line is not None:
        return f"{source or 'input'} line {line}"
    if row is not None:
        return f"{source or 'input'} row {row}"
    return source or "input"


@dataclass
class Product:
    """One catalog row: id, metadata (payload), the text to embed and a way to load its image.

    ``image_bytes`` or ``image_path`` (or neither, for a product without an image) tells where
    the image is; :meth:`load_image` decodes it upright as RGB and raises on unreadable data.
    ``image_url`` is a remote image (platform exports): :class:`ingest.fetch.ImageURLCatalog`
    downloads it into the image cache and sets ``image_path`` before the pipeline reads it.

    ``source`` / ``row`` / ``line`` locate the product in its input for error reports: ``row`` is
    the 0-based data-row index within ``source`` (as in ``dataset[row]``), ``line`` the 1-based
    line of a text file (CSV, JSONL) as an editor shows it.

    A reader that cannot make a product of a row (bad JSON, unparsable value…) still yields one,
    with ``error`` set, so the pipeline reports it with its location and goes on. A row without
    an id has ``product_id == ""``.

    ``value_errors`` names the fields whose value did not fit the field's type (``{field:
    reason}``); those values are not in ``metadata``, and the pipeline reports each one.
    """

    product_id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    value_errors: dict[str, str] = field(default_factory=dict)
    image_bytes: bytes | None = None
    image_path: Path | None = None
    row: int | None = None
    source: str = ""
    image_loader: Callable[[], Image.Image] | None = None
    line: int | None = None
    error: str | None = None
    image_url: str | None = None

    @property
    def has_image(self) -> bool:
        return (
            self.image_bytes is not None
            or self.image_path is not None
            or self.image_loader is not None
        )

    def load_image(self) -> Image.Image:
        """The product's image, upright and RGB (:func:`~clipy_qdrant.encoders.images.decode_image`);
        an InputError naming the product when it cannot be decoded."""
        name = f"{self.where()} image"
        if self.image_loader is not None:
            return decode_image(self.image_loader(), name=name)
        if self.image_bytes is not None:
            return decode_image(self.image_bytes, name=name)
        if self.image_path is not None:
            return decode_image(self.image_path, name=f"{name} {self.image_path}")
        if self.image_url is not None:
            raise FileNotFoundError(f"image {self.image_url} is not fetched yet")
        raise FileNotFoundError("product has no image")

    def where(self) -> str:
        """``styles.csv line 7`` / ``train.parquet row 5`` (or just the source) for messages."""
        return place(self.source, self.line, self.row)
