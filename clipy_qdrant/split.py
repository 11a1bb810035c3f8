"""The held-out rule shared by training and evaluation.

A product is held out (never trained on, used for evaluation) when its numeric id is
divisible by 5; ids that are not integers are hashed (CRC32) first. Deterministic,
independent of row order, and stable when the catalog grows.
"""

from __future__ import annotations

import zlib

SPLIT_RULE = "int(id) % 5 == 0 (non-numeric ids: crc32(id) % 5 == 0)"

#: Payload field (keyword, indexed) that ingest writes with :func:`split_of`, so evaluation
#: can restrict a search to held-out products with one indexed condition.
SPLIT_FIELD = "split"
HELDOUT = "test"
TRAIN = "train"


def _as_int(product_id: str | int) -> int:
    if isinstance(product_id, int):
        return product_id
    try:
        return int(product_id)
    except ValueError:
        return zlib.crc32(product_id.encode("utf-8"))


def fold_of(product_id: str | int) -> int:
    """The product's fold, 0..4: fold 0 is held out; folds 1..4 train the shipped model and
    can serve as validation folds (``train --validation-fold K``)."""
    return _as_int(product_id) % 5


def is_heldout(product_id: str | int) -> bool:
    """True for evaluation (test) products, False for training products."""
    return _as_int(product_id) % 5 == 0


def split_of(product_id: str | int) -> str:
    """``"test"`` for held-out products, ``"train"`` for the others."""
    return HELDOUT if is_heldout(product_id) else TRAIN
