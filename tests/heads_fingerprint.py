"""What a trained fashion-mini model does, in numbers that hold across CPUs: the text-image
scores of held-out products of a slice (each product's caption against each product's
picture), run exactly as the encoder runs the heads.

Two CPUs compute the frozen towers' features to different last bits (their ONNX Runtime and
torch kernels differ), and training carries those bits into the heads: a byte hash pins a
heads file to one machine type. The scores move with them by about 1e-4, while a change in
what training does moves them by far more (``tests/test_training.py``). Scores rather than
the tensors themselves: a low-rank head is fitted up to a rotation inside it, which a tiny
change of its inputs can turn, leaving what it computes as it was.

``python tests/heads_fingerprint.py MODEL_DIR CACHE_DIR`` prints them as JSON for the
2,000-product reference slice (how ``tests/data/train_reference.json`` records them).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipy_qdrant.training.products import ProductLike

#: Held-out products whose captions and pictures are scored against each other.
PRODUCTS = 16


def score_fingerprint(
    model_dir: Path, products: Sequence[ProductLike], cache_dir: Path
) -> list[list[float]]:
    """The first :data:`PRODUCTS` held-out products' captions (rows) scored against their
    pictures (columns), from the tower features cached under ``cache_dir``."""
    from clipy_qdrant.encoders.fashion import FashionHeads
    from clipy_qdrant.encoders.fashion.model_dir import read_model_dir, read_word_bag
    from clipy_qdrant.split import is_heldout
    from clipy_qdrant.training.features import cached_image_features, cached_text_features

    config, tensors = read_model_dir(model_dir)
    heads = FashionHeads.from_model(tensors, config, read_word_bag(model_dir, config))
    chosen = [p for p in products if is_heldout(p.product_id)][:PRODUCTS]
    feats, colours = cached_image_features(
        chosen,
        cache_dir,
        backbone=str(config["backbone"]),
        resolution=int(config["resolution"]),
        pooling=str(config["image_pooling"]),
        progress=False,
    )
    images = heads.image_vectors(np.concatenate([feats, colours], axis=1))
    captions = [p.text for p in chosen]
    texts = heads.text_vectors(cached_text_features(captions, cache_dir, progress=False), captions)
    scores = texts.astype(np.float64) @ images.astype(np.float64).T
    return [[round(float(s), 6) for s in row] for row in scores]


def reference_slice(catalog: Path) -> list[ProductLike]:
    """The reference slice: the catalog's first 2,000 products, captioned as ``clipy train``
    captions them."""
    from ingest.readers import NAME_TEXT_TEMPLATE, open_catalog

    return list(open_catalog(catalog, images=None, text_template=NAME_TEXT_TEMPLATE, limit=2000))


if __name__ == "__main__":
    from clipy_qdrant.config import Settings

    model, cache = Path(sys.argv[1]), Path(sys.argv[2])
    print(json.dumps(score_fingerprint(model, reference_slice(Settings().catalog), cache)))
