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
(:class:`~clipy_qdrant.search.Searcher`) applies it. Measured on the fashion catalog with
``fashion-mini`` in ``docs/eval.md`` and ``benchmarks/hubness_probe.py``.
"""

from __future__ import annotations

import re
import sys

import numpy as np

from clipy_qdrant.store.base import HUBNESS_KEY, IMAGE, TEXT, HubnessInfo, VectorStore

#: Neighbours averaged per image.
DEFAULT_TOP = 10
#: Decimals kept in the payload (1e-4 of a cosine is far below any ranking difference).
DECIMALS = 4
_WORD = re.compile(r"\w+")

__all__ = [
    "DEFAULT_TOP",
    "hubness_values",
    "query_gate",
    "refresh_hubness",
]


def query_gate(text: str | None) -> float:
    """0 for a query of up to two words, 1 from four words, linear in between."""
    words = len(_WORD.findall(text or ""))
    return float(min(max((words - 2) / 2.0, 0.0), 1.0))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def hubness_values(
    images: np.ndarray, texts: np.ndarray, top: int = DEFAULT_TOP, block: int = 2048
) -> np.ndarray:
    """``r_i``: the mean of each image row's ``top`` highest cosines with the distinct
    ``texts`` rows (``top`` is capped at their number), as float32, clamped at 0."""
    images = _unit_rows(images)
    bank = np.unique(_unit_rows(texts), axis=0)
    if len(images) == 0 or len(bank) == 0:
        return np.zeros(len(images), np.float32)
    top = max(1, min(top, len(bank)))
    out = np.empty(len(images), np.float32)
    for start in range(0, len(images), block):
        sims = images[start : start + block] @ bank.T
        best = sims if top == bank.shape[0] else -np.partition(-sims, top - 1, axis=1)[:, :top]
        out[start : start + block] = best.mean(axis=1)
    return np.maximum(out, 0.0)


def refresh_hubness(
    store: VectorStore, *, top: int = DEFAULT_TOP, progress: bool = False
) -> HubnessInfo | None:
    """Compute every stored product's hubness over the store's own texts, write it into the
    payloads and record it; ``None`` (and nothing written) for an empty store."""
    store.set_hubness_info(None)  # stale until every value is written
    ids: list[str] = []
    images: list[np.ndarray] = []
    texts: list[np.ndarray] = []
    points = store.scroll(with_vectors=True)
    if progress:
        from tqdm import tqdm

        points = tqdm(points, total=store.count(), desc="hubness: reading vectors", file=sys.stderr)
    for point in points:
        if IMAGE in point.vectors:
            ids.append(point.product_id)
            images.append(np.asarray(point.vectors[IMAGE], np.float32))
        if TEXT in point.vectors:
            texts.append(np.asarray(point.vectors[TEXT], np.float32))
    if not ids or not texts:
        return None
    bank = np.unique(_unit_rows(np.stack(texts)), axis=0)
    values = np.round(hubness_values(np.stack(images), bank, top).astype(np.float64), DECIMALS)
    store.set_payload(HUBNESS_KEY, {pid: float(v) for pid, v in zip(ids, values, strict=True)})
    info = HubnessInfo(
        top=min(top, len(bank)), bank=len(bank), points=len(ids), minimum=float(values.min())
    )
    store.set_hubness_info(info)
    return info
