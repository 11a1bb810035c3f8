"""Training of the ``fashion-mini`` heads on a catalog's products.

``train_fashion_encoder(products, out_dir, TrainConfig(...), cache_dir=...)`` trains on any
iterable of :class:`ProductLike` records and writes a model folder that
``fashion-mini:<folder>`` loads. Modules: :mod:`~clipy_qdrant.training.config` (every
setting and its default), :mod:`~clipy_qdrant.training.features` (tower-feature cache),
:mod:`~clipy_qdrant.training.captions`, :mod:`~clipy_qdrant.training.heads`,
:mod:`~clipy_qdrant.training.contrastive`, :mod:`~clipy_qdrant.training.classifiers`,
:mod:`~clipy_qdrant.training.evaluate`, :mod:`~clipy_qdrant.training.trainer`.

Importing this package is light: torch loads when training starts.
"""

from __future__ import annotations

from clipy_qdrant.training.config import TrainConfig
from clipy_qdrant.training.evaluate import evaluate_fashion_model
from clipy_qdrant.training.products import ProductLike
from clipy_qdrant.training.trainer import TrainReport, train_fashion_encoder

__all__ = [
    "ProductLike",
    "TrainConfig",
    "TrainReport",
    "evaluate_fashion_model",
    "train_fashion_encoder",
]
