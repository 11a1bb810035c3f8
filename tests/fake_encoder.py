"""A deterministic, fast, dependency-free encoder for tests (no model, no network).

- Texts: hashed bag of words (lower-cased ``\\w+`` tokens, each hashed with blake2b to a
  dimension and a sign), plus, for each colour word (``red``, ``blue``…), the same vector an
  image of that solid colour gets, so "red" finds red images across modalities.
- Images: a 4×4×4 RGB colour histogram of a 16×16 thumbnail, projected to ``dim`` with a
  fixed seeded Gaussian matrix, so images of similar colours are close.

Rows are unit length, float32, shape (n, dim); the name is ``fake`` (``fake-<dim>`` for a
dimension other than 32, so stores written with different dims are told apart).

Use :func:`register_fake` to make ``get_encoder("fake")`` / ``get_encoder("fake:64")`` work.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import re
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from clipy_qdrant.encoders import EncoderInfo, l2_normalize, register_encoder
from clipy_qdrant.errors import ConfigError

_BINS = 4  # per channel -> 64 histogram cells
_THUMB = 16
_SEED = 1234
_TOKEN = re.compile(r"\w+", re.UNICODE)

#: Colour words whose text vector includes the image vector of that solid colour.
COLOUR_WORDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": (220, 20, 20),
    "green": (20, 160, 40),
    "blue": (20, 40, 220),
    "yellow": (240, 220, 20),
    "orange": (250, 140, 10),
    "purple": (120, 30, 160),
    "pink": (250, 150, 190),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "brown": (120, 70, 20),
    "navy": (10, 20, 90),
}


class FakeEncoder:
    """Implements :class:`clipy_qdrant.encoders.base.Encoder` with hashing and colour histograms."""

    def __init__(self, dim: int = 32, *, colour_weight: float = 1.0) -> None:
        if dim < 2:
            raise ValueError("dim must be at least 2")
        self.dim = dim
        self.colour_weight = colour_weight
        rng = np.random.default_rng(_SEED)
        self._projection = rng.standard_normal((_BINS**3, dim)).astype(np.float32)
        self._info = EncoderInfo(name="fake" if dim == 32 else f"fake-{dim}", dim=dim)
        self.default_hubness = 0.0
        self.trained_split: str | None = None
        self.texts_encoded = 0
        self.images_encoded = 0

    @property
    def info(self) -> EncoderInfo:
        return self._info

    # -- texts -------------------------------------------------------------------------------

    def _token_slot(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, (1.0 if (value >> 32) & 1 else -1.0)

    def _colour_vector(self, rgb: tuple[int, int, int]) -> np.ndarray:
        hist = np.zeros(_BINS**3, dtype=np.float32)
        hist[_cell(np.array([rgb], dtype=np.int64))[0]] = 1.0
        vec: np.ndarray = hist @ self._projection
        return vec / max(float(np.linalg.norm(vec)), 1e-12)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Hashed bag of words (+ colour-word image vectors), unit rows."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            tokens = _TOKEN.findall(str(text).lower())
            for token in tokens:
                slot, sign = self._token_slot(token)
                out[i, slot] += sign
                if token in COLOUR_WORDS:
                    out[i] += self.colour_weight * self._colour_vector(COLOUR_WORDS[token])
            if not tokens or not out[i].any():
                # Empty text (or hashed tokens that cancel out) still gets a unit vector: the
                # contract has no zero rows.
                slot, sign = self._token_slot("")
                out[i, slot] = sign
        self.texts_encoded += len(texts)
        return l2_normalize(out)

    # -- images ------------------------------------------------------------------------------

    def image_histogram(self, image: Image.Image) -> np.ndarray:
        """Normalised 64-cell colour histogram of a 16×16 thumbnail."""
        thumb = image.convert("RGB").resize((_THUMB, _THUMB), Image.Resampling.BILINEAR)
        pixels = np.asarray(thumb, dtype=np.int64).reshape(-1, 3)
        hist = np.bincount(_cell(pixels), minlength=_BINS**3).astype(np.float32)
        return hist / hist.sum()

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Projected colour histograms, unit rows."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        hists = np.stack([self.image_histogram(img) for img in images])
        self.images_encoded += len(images)
        return l2_normalize(hists @ self._projection)


def _cell(pixels: np.ndarray) -> np.ndarray:
    """Histogram cell of each RGB row (values 0..255)."""
    q = np.clip(pixels * _BINS // 256, 0, _BINS - 1)
    cells: np.ndarray = q[:, 0] * _BINS * _BINS + q[:, 1] * _BINS + q[:, 2]
    return cells


def _factory(spec: str) -> FakeEncoder:
    arg = spec.partition(":")[2]
    return FakeEncoder(int(arg)) if arg else FakeEncoder()


def register_fake() -> None:
    """Register the fake encoder: ``get_encoder("fake")`` (dim 32) or ``"fake:<dim>"``."""
    register_encoder("fake", _factory)


def _first_worker_loads_slowly_the_others_fail(spec: str) -> FakeEncoder:
    """In ``clipy serve --workers`` worker 0 (which holds the store itself) takes a minute to
    load the encoder and every other worker fails at once: the server stops worker 0 while it
    holds the store."""
    if not multiprocessing.current_process().name.endswith("-0"):
        raise ConfigError("this worker cannot load the fake encoder")
    time.sleep(60)
    return _factory(spec)


def register_fake_failing_in_later_workers() -> None:
    """Register ``fake`` as :func:`_first_worker_loads_slowly_the_others_fail` builds it."""
    register_encoder("fake", _first_worker_loads_slowly_the_others_fail)
