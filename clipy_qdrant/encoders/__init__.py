"""Encoders behind one interface (see :mod:`clipy_qdrant.encoders.base`)."""

from clipy_qdrant.encoders.base import (
    Encoder,
    EncoderInfo,
    get_encoder,
    l2_normalize,
    register_encoder,
    registered_encoders,
)

__all__ = [
    "Encoder",
    "EncoderInfo",
    "get_encoder",
    "l2_normalize",
    "register_encoder",
    "registered_encoders",
]
