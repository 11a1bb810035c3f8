"""Hubness correction for text→image search.

In a shared text–image space some product images are *hubs*: close to very many texts, so
they turn up in the top results of queries they do not match and push the right product
down. The correction is CSLS-like (Conneau et al., 2018, "Word translation without parallel
data"): each product image gets a hubness value

    r_i = mean of the ``top`` highest cosines between image i and the store's product texts

(the distinct ``text`` vectors of the collection, so it needs no data beyond the store), and
a text query scores the ``image`` channel with ``cos(q, image_i) - c_q * r_i``. The query
weight ``c_q = beta * gate(q)`` grows with the query's length: ``gate`` is 0 for queries of
one or two words (a colour or a product type, where popular products are right answers and
the correction hurts) and 1 from four words on (a product description, where it finds the
one product meant). Image queries and the ``text`` channel are never corrected.

Ingest writes ``r_i`` into each product's payload (key ``hubness``) and a
:class:`~clipy_qdrant.store.base.HubnessInfo` record after every write; the query layer
(:class:`~clipy_qdrant.search.Searcher`) applies it. The numbers behind beta and the gate
for ``fashion-mini`` are in ``docs/eval.md`` and ``docs/experiments.md``.
"""

from __future__ import annotations

import re
import sys

import numpy as np

from clipy_qdrant.encoders.base import l2_normalize
from clipy_qdrant.store.base import HUBNESS_KEY, IMAGE, TEXT, HubnessInfo, VectorStore
from clipy_qdrant.store.fused import stored_fused

#: Neighbours averaged per image.
DEFAULT_TOP = 10
#: Largest bank: above this many distinct texts a fixed random sample is used (the cost is
#: products × bank × dim multiply-adds: 44k × 37k × 384 takes about 20 s on 2 cores).
MAX_BANK = 50_000
#: Decimals kept in the payload (1e-4 of a cosine is far below any ranking difference).
DECIMALS = 4
#: Quantile of the values taken as the low-hubness threshold (``HubnessInfo.low``): the
#: fraction of products the query layer's second image list searches.
LOW_QUANTILE = 0.1
_WORD = re.compile(r"\w+")

__all__ = [
    "DEFAULT_TOP",
    "LOW_QUANTILE",
    "MAX_BANK",
    "bank_of",
    "hubness_info_of",
    "hubness_values",
    "query_gate",
    "refresh_hubness",
]


def query_gate(text: str | None) -> float:
    """0 for a query of up to two words, 1 from four words, linear in between."""
    words = len(_WORD.findall(text or ""))
    return float(min(max((words - 2) / 2.0, 0.0), 1.0))


def hubness_values(
    images: np.ndarray, texts: np.ndarray, top: int = DEFAULT_TOP, block: int = 2048
) -> np.ndarray:
    """``r_i``: the mean of each image row's ``top`` highest cosines with the distinct
    ``texts`` rows (``top`` is capped at their number), as float32, clamped at 0."""
    bank = bank_of(texts, max_bank=len(texts))  # every distinct row, no sampling
    return _hubness_against(l2_normalize(images), bank, top, block)


def _hubness_against(
    images: np.ndarray, bank: np.ndarray, top: int, block: int = 2048
) -> np.ndarray:
    """:func:`hubness_values` for unit ``images`` rows against a prepared (distinct, unit)
    ``bank``."""
    if len(images) == 0 or len(bank) == 0:
        return np.zeros(len(images), np.float32)
    top = max(1, min(top, len(bank)))
    out = np.empty(len(images), np.float32)
    for start in range(0, len(images), block):
        sims = images[start : start + block] @ bank.T
        best = sims if top == bank.shape[0] else -np.partition(-sims, top - 1, axis=1)[:, :top]
        out[start : start + block] = best.mean(axis=1)
    return np.maximum(out, 0.0)


def bank_of(texts: np.ndarray, max_bank: int = MAX_BANK) -> np.ndarray:
    """The distinct unit rows of ``texts``; above ``max_bank`` of them, a fixed random sample
    of ``max_bank`` (seed 0), which keeps the cost of a huge catalog bounded."""
    bank = np.unique(l2_normalize(texts), axis=0)
    if len(bank) > max_bank:
        keep = np.sort(np.random.default_rng(0).choice(len(bank), max_bank, replace=False))
        bank = bank[keep]
    return bank


def refresh_hubness(
    store: VectorStore,
    *,
    top: int = DEFAULT_TOP,
    max_bank: int = MAX_BANK,
    block: int = 4096,
    progress: bool = False,
) -> HubnessInfo | None:
    """Compute every stored product's hubness over the store's own texts, write it into the
    payloads and record it; ``None`` (and nothing written) for an empty store.

    The ``hubness`` payload field gets a float index (the query layer's low-hubness list
    filters on it) and the record the low-hubness threshold (:func:`hubness_info_of`).

    Two passes over the store: the first collects the distinct text vectors (the bank, at
    most ``max_bank``), the second scores the image vectors ``block`` at a time and, on a
    store with the fused vector, rewrites each block's fused vectors with their values
    (:mod:`clipy_qdrant.store.fused`; the record is stale until the end, and a stale record
    turns the correction off). The payload values are written after the scroll. Memory
    holds the distinct text vectors, one block of image vectors and the values, never every
    vector of the store.
    """
    store.set_hubness_info(None)  # stale until every value is written
    distinct: dict[bytes, np.ndarray] = {}  # repeated product texts are kept once
    for p in store.scroll(with_vectors=True):
        if TEXT in p.vectors:
            vector = np.asarray(p.vectors[TEXT], np.float32)
            distinct.setdefault(vector.tobytes(), vector)
    if not distinct:
        return None
    bank = bank_of(np.stack(list(distinct.values())), max_bank)
    del distinct
    points = store.scroll(with_vectors=True)
    if progress:
        from tqdm import tqdm

        points = tqdm(points, total=store.count(), desc="hubness", unit="product", file=sys.stderr)
    values: dict[str, float] = {}
    ids: list[str] = []
    images: list[np.ndarray] = []
    texts: list[np.ndarray | None] = []
    fused = store.has_fused()

    def flush() -> None:
        if ids:
            unit = l2_normalize(np.stack(images))
            block_values = _hubness_against(unit, bank, top).astype(np.float64)
            rounded = np.round(block_values, DECIMALS).tolist()
            values.update(zip(ids, rounded, strict=True))
            if fused:
                store.set_fused(
                    {
                        pid: stored_fused(text, image, r)
                        for pid, text, image, r in zip(ids, texts, images, rounded, strict=True)
                        if text is not None
                    }
                )
            ids.clear()
            images.clear()
            texts.clear()

    for point in points:
        if IMAGE in point.vectors:
            ids.append(point.product_id)
            images.append(np.asarray(point.vectors[IMAGE], np.float32))
            texts.append(point.vectors.get(TEXT))
            if len(ids) >= block:
                flush()
    flush()
    if not values:
        return None
    store.set_payload(HUBNESS_KEY, values)
    encoder = store.encoder_info()
    if encoder is not None and store.indexed_fields().get(HUBNESS_KEY) != "float":
        store.ensure_collection(encoder, {HUBNESS_KEY: "float"})
    info = hubness_info_of(list(values.values()), top=min(top, len(bank)), bank=len(bank))
    store.set_hubness_info(info)
    return info


def hubness_info_of(values: list[float], *, top: int, bank: int) -> HubnessInfo:
    """The record of ``values`` (non-empty): their number, smallest value and low-hubness
    threshold, the ``LOW_QUANTILE`` quantile (one of the values: the query layer's filter
    ``hubness < low`` and its bound compare the stored values themselves)."""
    ordered = sorted(values)
    low = ordered[int(LOW_QUANTILE * (len(ordered) - 1))]
    return HubnessInfo(top=top, bank=bank, points=len(values), minimum=ordered[0], low=low)
