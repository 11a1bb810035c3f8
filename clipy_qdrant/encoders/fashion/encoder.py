"""The ``fashion-mini`` encoder: frozen towers, the colour descriptor and the trained heads.

Images: decoded upright RGB (:func:`~clipy_qdrant.encoders.images.decode_image`), then the
image tower's features and the colour descriptor, then the heads
(:class:`~clipy_qdrant.encoders.fashion.heads.FashionHeads`). Texts: MiniLM features and the
word bag, then the heads. Query texts (``encode_queries``), with ``query_words`` on: the query
words table's feature where it covers the text, else MiniLM's
(:mod:`~clipy_qdrant.encoders.fashion.query_words`). Inference runs the heads in numpy.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipy_qdrant.config import default_cache_dir
from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.encoders.fashion.colour import COLOUR_DIM, COLOUR_SPEC, colour_descriptor
from clipy_qdrant.encoders.fashion.heads import FashionHeads
from clipy_qdrant.encoders.fashion.model_dir import (
    DEFAULT_MODEL_DIR,
    model_name,
    read_model_dir,
    read_word_bag,
    strip_fingerprint,
)
from clipy_qdrant.encoders.fashion.query_words import QueryWords
from clipy_qdrant.encoders.fashion.towers import ImageTower, TextTower, preprocess_image
from clipy_qdrant.encoders.images import decode_image
from clipy_qdrant.errors import EncoderError


class FashionEncoder:
    """The ``fashion-mini`` dual encoder (Encoder protocol).

    ``image_runtime``: ``"onnx"`` (default, faster on this CPU), ``"torch"`` or ``"auto"``.
    ``threads``: intra-op threads of the towers (default: all cores).
    ``cache_dir``: where the towers' ONNX exports are cached (default:
    :func:`clipy_qdrant.config.default_cache_dir`).
    ``query_words``: encode query texts with the query words table where it covers them.
    """

    #: Strength of the query layer's hubness correction for text queries searching images
    #: (:mod:`clipy_qdrant.hubness`); chosen on validation fold 1, see docs/eval.md.
    default_hubness: float = 1.0

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        image_runtime: str = "onnx",
        threads: int | None = None,
        cache_dir: Path | None = None,
        query_words: bool = False,
    ) -> None:
        if cache_dir is None:
            cache_dir = default_cache_dir()
        self.model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        self.config, tensors = read_model_dir(self.model_dir)
        if self.config.get("colour_spec", COLOUR_SPEC) != COLOUR_SPEC:
            raise EncoderError(
                f"model at {self.model_dir} was trained with colour descriptor "
                f"{self.config.get('colour_spec')!r}, this clipy computes {COLOUR_SPEC!r}"
            )
        self.word_bag = read_word_bag(self.model_dir, self.config)
        self.heads = FashionHeads.from_model(tensors, self.config, self.word_bag)
        self.image_head = self.heads.image
        self.text_head = self.heads.text
        self.appearance_head = self.heads.appearance
        self.appearance_weight = self.heads.appearance_weight
        self.appearance_dim = self.heads.appearance_dim
        self.resolution = int(self.config.get("resolution", 224))
        self.backbone = str(self.config.get("backbone", "efficientnet-lite0"))
        self.image_tower = ImageTower(
            self.backbone,
            self.resolution,
            runtime=image_runtime,
            cache_dir=cache_dir,
            threads=threads,
            pooling=str(self.config.get("image_pooling", "gap")),
        )
        self.text_tower = TextTower(threads=threads, cache_dir=cache_dir)
        self.query_words = QueryWords.load() if query_words else None
        #: The held-out rule of the catalog split the heads were trained on.
        self.trained_split: str | None = str(self.config.get("split_rule") or "") or None
        name = model_name(self.model_dir, self.config, self.word_bag, cache_dir)
        self._info = EncoderInfo(name=name, dim=self.heads.dim)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def info(self) -> EncoderInfo:
        return self._info

    @property
    def dim(self) -> int:
        return self._info.dim

    # -- features (frozen towers), exposed for training and benchmarks
    def image_inputs(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """(n, backbone features + COLOUR_DIM) head inputs: backbone features, colour descriptor.

        Preprocessing of batch k+1 (PIL resize, colour histogram) runs in a helper thread while
        ONNX Runtime encodes batch k: both release the GIL, so the two overlap.
        """
        out = np.zeros((len(images), self.image_tower.feature_dim + COLOUR_DIM), np.float32)
        starts = list(range(0, len(images), batch_size))
        if not starts:
            return out
        pool = self._prep_pool()
        pending = pool.submit(self._prepare, images[0:batch_size])
        for k, start in enumerate(starts):
            pixels, colours = pending.result()
            if k + 1 < len(starts):
                nxt = starts[k + 1]
                pending = pool.submit(self._prepare, images[nxt : nxt + batch_size])
            feats = self.image_tower.features_from_pixels(pixels)
            out[start : start + len(pixels)] = np.concatenate([feats, colours], axis=1)
        return out

    def _prep_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipy-prep")
            return self._pool

    def _prepare(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        r = self.resolution
        pixels = np.empty((len(images), r, r, 3), dtype=np.uint8)
        colours = np.empty((len(images), COLOUR_DIM), dtype=np.float32)
        for i, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise EncoderError(f"encode_images expects PIL images, got {type(image).__name__}")
            rgb = decode_image(image)
            pixels[i] = preprocess_image(rgb, r)
            colours[i] = colour_descriptor(rgb)
        return pixels, colours

    # -- Encoder protocol
    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 unit rows for PIL images."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs = self.image_inputs(images, batch_size)
        return self.heads.image_vectors(inputs)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 unit rows for texts."""
        if isinstance(texts, str):
            raise EncoderError("encode_texts expects a list of strings, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        features = self.text_tower.features(texts, batch_size=batch_size)
        return self.heads.text_vectors(features, texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 unit rows for query texts: as :meth:`encode_texts`, except that
        with ``query_words`` on a text the table covers gets the table's feature instead of
        MiniLM's."""
        if self.query_words is None or isinstance(texts, str) or len(texts) == 0:
            return self.encode_texts(texts)
        texts = list(texts)
        found = self.query_words.features(texts)
        uncovered = [text for text, feature in zip(texts, found, strict=True) if feature is None]
        minilm = iter(self.text_tower.features(uncovered))  # no session call when empty
        features = np.stack([f if f is not None else next(minilm) for f in found])
        return self.heads.text_vectors(features.astype(np.float32), texts)


def load_fashion_encoder(path: str | None = None, **kwargs: Any) -> FashionEncoder:
    """The ``fashion-mini`` encoder from ``path`` (a trained model folder) or the shipped one.

    A trailing ``@<fingerprint>`` (as in a stored encoder name) is ignored here; the store
    compares the fingerprint with the loaded encoder's name.
    """
    if path:
        path = strip_fingerprint(path)
    return FashionEncoder(path or None, **kwargs)
