"""The ``fused`` vector: a product's two channels and its hubness in one vector, so that exact
weighted fusion of the dense channels is one nearest-neighbour query.

A product's fused vector is ``[t ; i ; r]`` (``2·dim + 1`` values, dot-product distance):
``t`` and ``i`` its unit ``text`` and ``image`` vectors, ``r`` its hubness
(:mod:`clipy_qdrant.hubness`; 0 until the hubness stage writes it). A weighted query asks
for ``[w_text·q_t ; w_image·q_i ; −w_image·c_q]``, whose inner product with a product's fused
vector is exactly the dense part of clipy's weighted score::

    w_text·cos(q_t, t) + w_image·(cos(q_i, i) − c_q·r)

for any weights chosen per query: one HNSW walk replaces the two channel lists, the
restricted queries that fill in their missing scores, the low-hubness list and the rounds
that deepen them (:mod:`clipy_qdrant.retrieval`, docs/experiments.md "Fused vector probe").
The vector is stored in float32, like the channels, so its scores are the channels' to
float rounding; int8 quantization clips the image channel's large values and fails the
recall bar there (same section), so the fused vector is never quantized.

A store has the fused vector when it was created with it (``StoreMeta.fused``) and every
product written to it holds both channels; a product with one channel only turns it off for
the store, whose searches then take the channel lists.
"""

from __future__ import annotations

import numpy as np

FUSED = "fused"


def fused_dim(dim: int) -> int:
    """The fused vector's length for channels of ``dim`` values."""
    return 2 * dim + 1


def stored_fused(text: np.ndarray, image: np.ndarray, hubness: float) -> np.ndarray:
    """A product's fused vector ``[t/|t| ; i/|i| ; hubness]`` (float32)."""
    t = np.asarray(text, np.float32).reshape(-1)
    i = np.asarray(image, np.float32).reshape(-1)
    out = np.empty(t.shape[0] + i.shape[0] + 1, np.float32)
    out[: t.shape[0]] = t / np.linalg.norm(t)
    out[t.shape[0] : -1] = i / np.linalg.norm(i)
    out[-1] = hubness
    return out


def fused_query(
    text: np.ndarray, image: np.ndarray, w_text: float, w_image: float, c_q: float
) -> np.ndarray:
    """The query of weighted fusion on the fused vector: ``[w_text·q_t ; w_image·q_i ;
    −w_image·c_q]`` for unit query vectors ``q_t``, ``q_i`` and hubness weight ``c_q``."""
    t = np.asarray(text, np.float32).reshape(-1)
    i = np.asarray(image, np.float32).reshape(-1)
    out = np.empty(t.shape[0] + i.shape[0] + 1, np.float32)
    out[: t.shape[0]] = w_text * t
    out[t.shape[0] : -1] = w_image * i
    out[-1] = -w_image * c_q
    return out


__all__ = ["FUSED", "fused_dim", "fused_query", "stored_fused"]
