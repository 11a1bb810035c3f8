"""The encoder contract and the registry of encoders by name.

Contract: ``encode_texts`` / ``encode_images`` return float32 arrays of shape (n, dim)
whose rows have unit L2 norm; text and image vectors live in one shared space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from clipy_qdrant.errors import ConfigError


@dataclass(frozen=True)
class EncoderInfo:
    """What the store remembers about the encoder that wrote it."""

    name: str
    dim: int


@runtime_checkable
class Encoder(Protocol):
    """An image–text dual encoder."""

    @property
    def info(self) -> EncoderInfo: ...

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray: ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


EncoderFactory = Callable[[str], Encoder]

# name prefix -> factory(spec). A spec is "name" or "name:argument".
_REGISTRY: dict[str, EncoderFactory] = {}


def register_encoder(name: str, factory: EncoderFactory) -> None:
    """Make ``get_encoder(name)`` / ``get_encoder(f"{name}:arg")`` build an encoder with ``factory``."""
    _REGISTRY[name] = factory


def registered_encoders() -> list[str]:
    _register_builtins()
    return sorted(_REGISTRY)


def _register_builtins() -> None:
    if "fashion-mini" not in _REGISTRY:

        def _fashion(spec: str) -> Encoder:
            from clipy_qdrant.encoders.fashion import load_fashion_encoder

            return load_fashion_encoder(spec.partition(":")[2] or None)

        _REGISTRY["fashion-mini"] = _fashion
    if "clip" not in _REGISTRY:

        def _clip(spec: str) -> Encoder:
            from clipy_qdrant.encoders.clip import ClipEncoder

            model = spec.partition(":")[2] or "clip-ViT-B-32"
            return ClipEncoder(model)

        _REGISTRY["clip"] = _clip


def get_encoder(spec: str) -> Encoder:
    """Build an encoder from a spec: ``fashion-mini``, ``clip``, ``clip:<hub-id-or-path>``,
    ``clip-ViT-B-32`` (any name starting with ``clip-`` is a CLIP id), or a registered name."""
    _register_builtins()
    # "name@fingerprint" (as recorded in a store) loads the named encoder; the fingerprint is
    # then compared with the loaded one's by the store's encoder check.
    name = spec.partition(":")[0].partition("@")[0]
    if name in _REGISTRY:
        return _REGISTRY[name](spec)
    if spec.startswith("clip-"):
        return _REGISTRY["clip"](f"clip:{spec}")
    raise ConfigError(
        f"unknown encoder {spec!r}; known: {', '.join(sorted(_REGISTRY))} (or clip:<model id or path>)"
    )
