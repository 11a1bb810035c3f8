"""The product record every catalog reader yields."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class Product:
    """One catalog row: id, metadata (payload), the text to embed and a way to load its image.

    ``image_bytes`` or ``image_path`` (or neither, for a product without an image) tells where
    the image is; :meth:`load_image` decodes it as RGB and raises on unreadable data.
    ``row`` / ``source`` locate the product in its input for error reports.
    """

    product_id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    image_bytes: bytes | None = None
    image_path: Path | None = None
    row: int | None = None
    source: str = ""
    image_loader: Callable[[], Image.Image] | None = None

    def load_image(self) -> Image.Image:
        if self.image_loader is not None:
            img = self.image_loader()
        elif self.image_bytes is not None:
            img = Image.open(io.BytesIO(self.image_bytes))
        elif self.image_path is not None:
            img = Image.open(self.image_path)
        else:
            raise FileNotFoundError("product has no image")
        img.load()
        return img.convert("RGB")

    def where(self) -> str:
        """``source row N`` (or the image file) for messages."""
        parts = [self.source or "input"]
        if self.row is not None:
            parts.append(f"row {self.row}")
        return " ".join(parts)
