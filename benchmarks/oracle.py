"""Exact references over a store's vectors: a numpy oracle (float64 brute force) and a FAISS
``IndexFlatIP`` fused search, both with clipy's scoring.

Weighted fusion of a query ``(q_t, q_i, c)`` scores product ``p`` with

    w_text * <q_t, t_p> + w_image * (<q_i, i_p> - c * h_p)

(``clipy_qdrant.search``: cosine on unit vectors, the hubness penalty ``c_q * r_i`` on the
image channel), which is one inner product of ``[w_text q_t ; w_image q_i ; -w_image c]``
with ``[t_p ; i_p ; h_p]``: the FAISS fused index holds those rows. RRF and DBSF are defined
on candidate lists, so their oracle fuses the exact per-channel lists (depth = the Searcher's
``candidates``; the image list re-ranked by the corrected score, as the Searcher does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipy_qdrant.fusion import FusionConfig, dbsf_scores, rrf_scores, top_k
from clipy_qdrant.store import HUBNESS_KEY, IMAGE, TEXT, VectorStore

#: Score tolerance of a tie: a returned product whose exact score reaches the exact k-th
#: score minus this is correct (many products share a name, hence a text vector).
TIE_EPS = 2e-5


@dataclass
class StoredVectors:
    """Every stored product: unit text / image rows, hubness values and payloads."""

    ids: list[str]
    text: np.ndarray
    image: np.ndarray
    hubness: np.ndarray
    payloads: list[dict[str, Any]]
    row_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row_of = {pid: i for i, pid in enumerate(self.ids)}

    @classmethod
    def from_store(cls, store: VectorStore) -> StoredVectors:
        info = store.hubness_info()
        missing = info.minimum if info is not None else 0.0
        ids, payloads, text, image, hub = [], [], [], [], []
        for point in store.scroll(with_vectors=True):
            ids.append(point.product_id)
            payloads.append(point.payload)
            text.append(point.vectors[TEXT])
            image.append(point.vectors[IMAGE])
            hub.append(float(point.payload.get(HUBNESS_KEY, missing)))
        return cls(ids, _unit_rows(text), _unit_rows(image), np.asarray(hub, np.float32), payloads)

    def mask(self, predicate: Any) -> np.ndarray | None:
        """Boolean row mask of the products whose payload satisfies ``predicate``."""
        if predicate is None:
            return None
        return np.fromiter((bool(predicate(p)) for p in self.payloads), bool, len(self.payloads))


def _unit_rows(rows: list[np.ndarray]) -> np.ndarray:
    mat = np.stack(rows).astype(np.float32)
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(mat)


class ExactOracle:
    """Brute-force fused scores in float64 over every stored vector."""

    def __init__(self, vectors: StoredVectors, candidates: int) -> None:
        self.v = vectors
        self.candidates = candidates
        self.text = vectors.text.astype(np.float64)
        self.image = vectors.image.astype(np.float64)
        self.hub = vectors.hubness.astype(np.float64)

    def channel(self, channel: str, q: np.ndarray) -> np.ndarray:
        return (self.text if channel == TEXT else self.image) @ q.astype(np.float64)

    def fused(
        self, qt: np.ndarray, qi: np.ndarray, c: float, cfg: FusionConfig, mask: np.ndarray | None
    ) -> dict[str, float] | np.ndarray:
        """Exact fused scores: an array over all rows (weighted) or ``{id: score}`` (rrf/dbsf);
        rows outside ``mask`` score ``-inf`` / are absent."""
        cos_t = self.channel(TEXT, qt)
        corr_i = self.channel(IMAGE, qi) - c * self.hub
        if cfg.method == "weighted":
            scores = cfg.w_text * cos_t + cfg.w_image * corr_i
            return np.where(mask, scores, -np.inf) if mask is not None else scores
        cos_i = corr_i + c * self.hub
        lists = []
        for by, rerank in ((cos_t, cos_t), (cos_i, corr_i)):
            masked = np.where(mask, by, -np.inf) if mask is not None else by
            depth = min(self.candidates, int(np.isfinite(masked).sum()))
            top = np.argpartition(-masked, depth - 1)[:depth]
            top = top[np.argsort(-masked[top], kind="stable")]
            order = top[np.argsort(-rerank[top], kind="stable")]
            lists.append([(self.v.ids[r], float(rerank[r])) for r in order])
        weights = [cfg.w_text, cfg.w_image]
        if cfg.method == "rrf":
            return rrf_scores(lists, weights, cfg.rrf_k)
        return dbsf_scores(lists, weights)

    def recall(self, fused: dict[str, float] | np.ndarray, got: list[str], k: int) -> float:
        """Tie-aware recall@k of the returned ids against the exact fused scores."""
        if isinstance(fused, dict):
            best = top_k(fused, k)
            if not best:
                return 1.0
            kth = best[-1][1]
            want = len(best)
            hits = sum(1 for pid in got[:k] if fused.get(pid, -np.inf) >= kth - TIE_EPS)
        else:
            finite = int(np.isfinite(fused).sum())
            want = min(k, finite)
            if want == 0:
                return 1.0
            kth = np.partition(-fused, want - 1)[want - 1] * -1
            rows = [self.v.row_of[pid] for pid in got[:k]]
            hits = int(np.sum(fused[rows] >= kth - TIE_EPS)) if rows else 0
        return min(hits, want) / want


class FaissFused:
    """FAISS exact search (one thread): a fused ``[t ; i ; h]`` index for weighted fusion and
    one index per channel for the candidate lists of RRF / DBSF."""

    def __init__(self, vectors: StoredVectors, candidates: int) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        self.faiss = faiss
        self.v = vectors
        self.candidates = candidates
        dim = vectors.text.shape[1]
        fused = np.hstack([vectors.text, vectors.image, vectors.hubness[:, None]])
        self.fused = faiss.IndexFlatIP(2 * dim + 1)
        self.fused.add(np.ascontiguousarray(fused, dtype=np.float32))
        self.channels = {}
        for name, mat in ((TEXT, vectors.text), (IMAGE, vectors.image)):
            index = faiss.IndexFlatIP(dim)
            index.add(mat)
            self.channels[name] = index

    def selector(self, mask: np.ndarray | None) -> Any:
        """Search parameters restricting a search to the rows of ``mask`` (built once)."""
        if mask is None:
            return None
        faiss: Any = self.faiss
        rows = np.flatnonzero(mask).astype(np.int64)
        sel = faiss.IDSelectorBatch(len(rows), faiss.swig_ptr(rows))
        params = faiss.SearchParameters(sel=sel)
        params._rows = rows  # keep the id array alive as long as the selector
        return params

    def search(
        self, qt: np.ndarray, qi: np.ndarray, c: float, cfg: FusionConfig, k: int, params: Any
    ) -> list[str]:
        if cfg.method == "weighted":
            q = np.concatenate([cfg.w_text * qt, cfg.w_image * qi, [-cfg.w_image * c]])
            _, rows = self.fused.search(q[None, :].astype(np.float32), k, params=params)
            return [self.v.ids[r] for r in rows[0] if r >= 0]
        lists = []
        for name, q in ((TEXT, qt), (IMAGE, qi)):
            scores, rows = self.channels[name].search(
                q[None, :].astype(np.float32), self.candidates, params=params
            )
            pairs = [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]
            if name == IMAGE and c > 0:
                pairs = sorted(
                    ((r, s - c * float(self.v.hubness[r])) for r, s in pairs), key=lambda x: -x[1]
                )
            lists.append([(self.v.ids[r], s) for r, s in pairs])
        weights = [cfg.w_text, cfg.w_image]
        if cfg.method == "rrf":
            fused = rrf_scores(lists, weights, cfg.rrf_k)
        else:
            fused = dbsf_scores(lists, weights)
        return [pid for pid, _ in top_k(fused, k)]
