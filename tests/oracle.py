"""Exact brute-force reference for every search path (FAISS ``IndexFlatIP`` over unit rows).

Use from tests as ``from oracle import Oracle, assert_same_topk, make_products``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from clipy_qdrant.filters import Filter, matches


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


class Oracle:
    """Exact cosine top-k per named vector, restricted by the pure reference ``matches``."""

    def __init__(
        self,
        ids: Sequence[str],
        vectors: Mapping[str, np.ndarray],
        payloads: Sequence[Mapping[str, Any]],
    ) -> None:
        if len(ids) != len(payloads):
            raise ValueError("ids and payloads differ in length")
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique")
        self.ids = [str(i) for i in ids]
        self.payloads = [dict(p) for p in payloads]
        self.vectors: dict[str, np.ndarray] = {}
        self._index: dict[str, faiss.IndexFlatIP] = {}
        for name, mat in vectors.items():
            unit = _normalize(mat)
            if unit.shape[0] != len(self.ids):
                raise ValueError(f"vector {name!r} has {unit.shape[0]} rows for {len(ids)} ids")
            index = faiss.IndexFlatIP(unit.shape[1])
            index.add(unit)
            self.vectors[name] = unit
            self._index[name] = index

    def _allowed(self, flt: Filter | None) -> np.ndarray:
        return np.array([i for i, p in enumerate(self.payloads) if matches(flt, p)], dtype=np.int64)

    def search(
        self, using: str, query: np.ndarray, k: int, flt: Filter | None = None
    ) -> list[tuple[str, float]]:
        """Exact top-``k`` ``(product_id, cosine)`` best first among products matching ``flt``."""
        index = self._index[using]
        q = _normalize(query)
        params = None
        if flt is not None:
            allowed = self._allowed(flt)
            if allowed.size == 0:
                return []
            # Keep the selector referenced: SWIG does not own it through ``params``.
            selector = faiss.IDSelectorBatch(allowed)
            params = faiss.SearchParameters()
            params.sel = selector
        k_eff = min(k, index.ntotal)
        if k_eff <= 0:
            return []
        scores, rows = index.search(q, k_eff, params=params)
        return [
            (self.ids[int(r)], float(s)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0
        ]

    def scores(self, using: str, query: np.ndarray) -> dict[str, float]:
        """Cosine of ``query`` with every product's ``using`` vector."""
        q = _normalize(query)[0]
        sims = self.vectors[using] @ q
        return {pid: float(s) for pid, s in zip(self.ids, sims, strict=True)}


def assert_same_topk(
    got: Sequence[tuple[str, float]], want: Sequence[tuple[str, float]], tol: float = 1e-5
) -> None:
    """Same top-k up to ties: scores equal position by position within ``tol``; ids equal as
    sets except that items scoring within ``tol`` of the last (k-th) score may be swapped."""
    got = [(str(i), float(s)) for i, s in got]
    want = [(str(i), float(s)) for i, s in want]
    assert len(got) == len(want), f"got {len(got)} hits, want {len(want)}\ngot={got}\nwant={want}"
    got_ids = [i for i, _ in got]
    assert len(set(got_ids)) == len(got_ids), f"duplicate ids in result: {got_ids}"
    for pos, ((gi, gs), (wi, ws)) in enumerate(zip(got, want, strict=True)):
        assert abs(gs - ws) <= tol, f"score at rank {pos}: got {gi}={gs:.7f}, want {wi}={ws:.7f}"
    want_score = dict(want)
    for gi, gs in got:
        if gi in want_score:
            assert abs(gs - want_score[gi]) <= tol, (
                f"{gi}: got score {gs:.7f}, want {want_score[gi]:.7f}"
            )
    if not want:
        return
    kth = want[-1][1]
    # Items clearly above the cut-off score must be the same on both sides.
    got_sure = {i for i, s in got if s > kth + tol}
    want_sure = {i for i, s in want if s > kth + tol}
    assert got_sure == want_sure, (
        f"top-k differs above tied scores: missing {sorted(want_sure - got_sure)}, "
        f"extra {sorted(got_sure - want_sure)}"
    )


GENDERS = ("Men", "Women", "Unisex", "Boys", "Girls")
ARTICLE_TYPES = ("Tshirts", "Shirts", "Jeans", "Watches", "Casual Shoes", "Handbags", "Kurtas")
COLOURS = ("Black", "White", "Blue", "Red", "Green", "Navy Blue", "Grey", "Pink")
SEASONS = ("Summer", "Winter", "Fall", "Spring")
USAGES = ("Casual", "Formal", "Sports", "Ethnic")


def make_products(
    n: int, dim: int, seed: int = 0
) -> tuple[list[str], dict[str, np.ndarray], list[dict[str, Any]]]:
    """A small catalog-like collection: ids, ``{"image", "text"}`` unit float32 vectors, payloads.

    Vectors cluster by articleType and colour (as real embeddings do), and each image vector
    is its text vector plus noise, so the two vectors agree without being equal.
    """
    rng = np.random.default_rng(seed)
    type_centres = rng.standard_normal((len(ARTICLE_TYPES), dim))
    colour_centres = rng.standard_normal((len(COLOURS), dim))
    ids = [str(10000 + i) for i in range(n)]
    t_idx = rng.integers(0, len(ARTICLE_TYPES), n)
    c_idx = rng.integers(0, len(COLOURS), n)
    text = (
        1.0 * type_centres[t_idx]
        + 0.6 * colour_centres[c_idx]
        + 0.8 * rng.standard_normal((n, dim))
    )
    image = _normalize(text) + 0.7 * _normalize(rng.standard_normal((n, dim)))
    payloads: list[dict[str, Any]] = []
    for i in range(n):
        article = ARTICLE_TYPES[t_idx[i]]
        colour = COLOURS[c_idx[i]]
        payloads.append(
            {
                "gender": GENDERS[int(rng.integers(0, len(GENDERS)))],
                "articleType": article,
                "baseColour": colour,
                "season": SEASONS[int(rng.integers(0, len(SEASONS)))],
                "year": int(rng.integers(2008, 2019)),
                "usage": USAGES[int(rng.integers(0, len(USAGES)))],
                "productDisplayName": f"{colour} {article} {i}",
            }
        )
    return ids, {"text": _normalize(text), "image": _normalize(image)}, payloads


__all__ = ["STORE_KINDS", "Oracle", "assert_same_topk", "make_products", "open_test_store"]


#: The stores every exact-fusion suite runs on: the embedded store and qdrant-client's local
#: mode (weighted fusion on the fused vector), and an embedded store created without the fused
#: vector (weighted fusion by the threshold algorithm over the channel lists).
STORE_KINDS = ("edge", "memory", "edge-channels")


def open_test_store(kind: str, folder: Path, collection: str) -> Any:
    """A new store of one of :data:`STORE_KINDS` (``folder``: an empty temporary folder)."""
    from clipy_qdrant.store import CollectionOptions, open_store

    if kind == "memory":
        return open_store(url=":memory:", collection=collection)
    options = CollectionOptions(fused_vector=kind != "edge-channels")
    store = open_store(folder / "store", options=options)
    assert store.has_fused() is False  # no collection yet
    return store
