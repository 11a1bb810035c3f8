"""What training reads from a catalog record, and how a metadata value is cleaned."""

from __future__ import annotations

from typing import Any, Protocol

from PIL import Image


class ProductLike(Protocol):
    """What training needs from a catalog record (``ingest.records.Product`` fits)."""

    product_id: str
    text: str
    metadata: dict[str, Any]

    def load_image(self) -> Image.Image: ...


def clean(value: Any) -> str:
    """A metadata value as text; missing markers ("", "nan", "none", "na") become ""."""
    text = "" if value is None else str(value).strip()
    return "" if text.lower() in {"", "nan", "none", "na"} else text
