"""``fashion-mini``: clipy's own offline image–text dual encoder, trained on the fashion catalog.

Modules: :mod:`.towers` (the frozen backbones and their ONNX exports), :mod:`.colour` (the
foreground colour descriptor), :mod:`.heads` (the trained heads and the vector layout),
:mod:`.model_dir` (a model folder, its config and fingerprint) and :mod:`.encoder`
(:class:`FashionEncoder`).
"""

from __future__ import annotations

from clipy_qdrant.encoders.fashion.colour import COLOUR_DIM, COLOUR_SPEC, colour_descriptor
from clipy_qdrant.encoders.fashion.encoder import FashionEncoder, load_fashion_encoder
from clipy_qdrant.encoders.fashion.heads import (
    ColourHeads,
    FashionHeads,
    ProjectionHead,
    TypeHead,
    WordBag,
    text_head_inputs,
    text_words,
)
from clipy_qdrant.encoders.fashion.model_dir import (
    DEFAULT_MODEL_DIR,
    ENCODER_NAME,
    read_model_dir,
    read_word_bag,
)
from clipy_qdrant.encoders.fashion.towers import ImageTower, TextTower

__all__ = [
    "COLOUR_DIM",
    "COLOUR_SPEC",
    "DEFAULT_MODEL_DIR",
    "ENCODER_NAME",
    "ColourHeads",
    "FashionEncoder",
    "FashionHeads",
    "ImageTower",
    "ProjectionHead",
    "TextTower",
    "TypeHead",
    "WordBag",
    "colour_descriptor",
    "load_fashion_encoder",
    "read_model_dir",
    "read_word_bag",
    "text_head_inputs",
    "text_words",
]
