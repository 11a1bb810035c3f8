"""Fitting the query words table (:mod:`clipy_qdrant.encoders.fashion.query_words`).

The texts are the training products' captions (names and attribute phrases, as the heads
train on them); their MiniLM features are the targets. Each text's row of the design matrix
is the mean of its words' one-hot rows, so the table ``W`` solves the ridge problem
``min ||X W - Y||² + ridge ||W||²`` in closed form, ``(XᵀX + ridge I) W = XᵀY``, over a
vocabulary of a few thousand words. The ridge is chosen on a validation fold: fitted on the
other training folds, the value whose validation texts (those not among the fitted ones) come
closest to MiniLM by mean cosine; the table is then fitted on every training text with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipy_qdrant.encoders.fashion.query_words import QueryWords, text_words
from clipy_qdrant.errors import InputError
from clipy_qdrant.split import fold_of, is_heldout
from clipy_qdrant.training.captions import product_captions
from clipy_qdrant.training.products import ProductLike

#: Ridge values tried on the validation fold.
RIDGE_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
#: The training fold whose texts choose the ridge.
VALIDATION_FOLD = 1


@dataclass(frozen=True)
class QueryWordsFit:
    """A fitted table and how it was chosen: validation cosine per ridge value."""

    table: QueryWords
    ridge: float
    validation_cosine: dict[float, float]
    texts: int


def product_texts(products: Sequence[ProductLike]) -> dict[int, list[str]]:
    """Training fold -> its products' captions (name, then attribute phrases), held-out
    products left out."""
    folds: dict[int, list[str]] = {}
    for product in products:
        if is_heldout(product.product_id):
            continue
        folds.setdefault(fold_of(product.product_id), []).extend(product_captions(product))
    return folds


def fit_table(texts: Sequence[str], features: np.ndarray, ridge: float) -> QueryWords:
    """The ridge least-squares table of ``texts`` (their words' vectors) whose mean per text
    comes closest to ``features`` (one unit row per text)."""
    index: dict[str, int] = {}
    rows = []
    for text in texts:
        rows.append([index.setdefault(word, len(index)) for word in text_words(text)])
    size = len(index)
    if size == 0:
        raise InputError("no words to fit the query words table on")
    gram = np.zeros((size, size))
    target = np.zeros((size, features.shape[1]))
    for text_rows, feature in zip(rows, features.astype(np.float64), strict=True):
        if not text_rows:
            continue
        ids, counts = np.unique(text_rows, return_counts=True)
        weights = counts / len(text_rows)
        gram[np.ix_(ids, ids)] += np.outer(weights, weights)
        target[ids] += np.outer(weights, feature)
    gram[np.diag_indices(size)] += ridge
    vectors = np.linalg.solve(gram, target)
    return QueryWords(list(index), vectors.astype(np.float32))


def mean_cosine(table: QueryWords, texts: Sequence[str], features: np.ndarray) -> float:
    """The mean cosine between the table's features and ``features`` over the texts it covers."""
    found = table.features(texts)
    sims = [float(f @ t) for f, t in zip(found, features, strict=True) if f is not None]
    return float(np.mean(sims)) if sims else 0.0


def fit_query_words(
    products: Sequence[ProductLike],
    text_features: Callable[[list[str]], np.ndarray],
    grid: Sequence[float] = RIDGE_GRID,
) -> QueryWordsFit:
    """Choose the ridge on :data:`VALIDATION_FOLD`, then fit the table on every training text.
    ``text_features`` gives MiniLM's feature of each text (cached by the caller)."""
    folds = product_texts(products)
    validation = list(dict.fromkeys(folds.get(VALIDATION_FOLD, [])))
    fitted = list(
        dict.fromkeys(
            t for fold, texts in sorted(folds.items()) if fold != VALIDATION_FOLD for t in texts
        )
    )
    seen = set(fitted)
    validation = [t for t in validation if t not in seen]
    everything = fitted + validation
    if not fitted or not validation:
        raise InputError("the query words table needs training products in several folds")
    features = text_features(everything)
    fitted_features, validation_features = features[: len(fitted)], features[len(fitted) :]
    scores = {
        ridge: mean_cosine(
            fit_table(fitted, fitted_features, ridge), validation, validation_features
        )
        for ridge in grid
    }
    best = max(scores, key=lambda ridge: scores[ridge])
    table = fit_table(everything, features, best)
    return QueryWordsFit(table=table, ridge=best, validation_cosine=scores, texts=len(everything))


def write_query_words(fit: QueryWordsFit, path: Path) -> None:
    """Write the fitted table to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fit.table.save(path)
