"""A query's vectors: one unit vector per dense channel, the lexical query of its (corrected)
text, and the query image decoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clipy_qdrant.encoders.images import decode_image, describe_source
from clipy_qdrant.errors import InputError
from clipy_qdrant.lexical import LexicalQuery
from clipy_qdrant.spelling import Correction
from clipy_qdrant.store.base import TEXT

ImageInput = Image.Image | str | Path | bytes


@dataclass
class QueryVectors:
    """The query vector for each channel (unit length), and the weight ``c_q`` of the hubness
    correction on the image channel (set for a text query without an image, by
    :meth:`~clipy_qdrant.search.Searcher.query_vectors`), the lexical query of the query text
    (``None`` without a text or a lexical channel), the spelling correction applied to the
    text before it was encoded (``None`` when none was tried) and whether the (corrected)
    text is a code and nothing else (:func:`~clipy_qdrant.spelling.is_code_query`; set only
    where the lexical channel can answer it)."""

    text: np.ndarray
    image: np.ndarray
    image_hubness: float = 0.0
    lexical: LexicalQuery | None = None
    correction: Correction | None = None
    code_only: bool = False

    def __post_init__(self) -> None:
        self.text = _unit(self.text)
        self.image = _unit(self.image)

    def for_channel(self, channel: str) -> np.ndarray:
        return self.text if channel == TEXT else self.image


def _unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise InputError("query vector is zero or not finite")
    return v / norm


def load_query_image(image: ImageInput) -> Image.Image:
    """A query image (PIL image, path or bytes) upright and as RGB
    (:func:`~clipy_qdrant.encoders.images.decode_image`), or a one-line InputError."""
    return decode_image(image, name=f"query {describe_source(image)}")
