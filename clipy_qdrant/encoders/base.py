"""The encoder contract: what ingest, search and evaluation need from an encoder.

``encode_texts`` / ``encode_images`` return float32 arrays of shape (n, dim) whose rows have
unit L2 norm; text and image vectors live in one shared space. An encoder may also define
``encode_queries(texts)``, the vectors of query texts (rows as ``encode_texts``'s), when it
encodes a query otherwise than a stored product's text; search calls it through
:func:`encode_queries`, ingest never does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class EncoderInfo:
    """What the store remembers about the encoder that wrote it."""

    name: str
    dim: int


@runtime_checkable
class Encoder(Protocol):
    """An image–text dual encoder.

    ``default_hubness`` is the strength of the query layer's hubness correction for text
    queries searching images (:mod:`clipy_qdrant.hubness`) when the caller gives none; 0 turns
    it off. ``trained_split`` is the held-out rule of the catalog split the model was trained
    on (evaluation then judges held-out products only), ``None`` for a model not trained on
    the catalog.
    """

    default_hubness: float
    trained_split: str | None

    @property
    def info(self) -> EncoderInfo: ...

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray: ...


def encode_queries(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """The query vectors of ``texts``: the encoder's ``encode_queries`` where it has one, else
    its ``encode_texts``."""
    method = getattr(encoder, "encode_queries", None)
    return method(texts) if method is not None else encoder.encode_texts(texts)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
