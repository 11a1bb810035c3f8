"""RRF on a store whose products share vectors (issue #17): many catalog products share a
name, hence a text vector, and some are listed twice with the same image. Tied channel scores
share the mean of their positions' contributions, so clipy's RRF equals the FAISS oracle's on both backends whatever
order each engine returns tied products in, exact duplicates score equal, and the benchmark
suite's exact references (``benchmarks.oracle``) agree with each other at recall 1; the suite
measures the cases it is asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from oracle import Oracle, assert_same_topk

from benchmarks.__main__ import RECALL_FLOOR, recall_failures
from benchmarks.oracle import ExactOracle, FaissFused, StoredVectors
from benchmarks.search_bench import select_cases
from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.fusion import FusionConfig, dbsf_scores, rrf_scores, top_k
from clipy_qdrant.search import QueryVectors, Searcher
from clipy_qdrant.store import PointRecord, VectorStore, open_store

DIM, K = 16, 10
#: 240 products: 60 names of 4 products each (one text vector per name); the first 15 names'
#: products are 2 pairs of exact duplicates (text and image), the others have their own image.
NAMES, PER_NAME, DUPLICATED_NAMES = 60, 4, 15
N = NAMES * PER_NAME
#: The candidate lists hold every product, so no tied group is cut by the list depth.
CANDIDATES = N
CONFIGS = [
    FusionConfig("rrf", 1.0, 1.0, rrf_k=60, w_lexical=0),
    FusionConfig("rrf", 0.3, 0.7, rrf_k=2, w_lexical=0),
    FusionConfig("dbsf", 1.0, 1.0, w_lexical=0),
]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def products() -> tuple[list[str], dict[str, np.ndarray], list[dict[str, Any]]]:
    rng = np.random.default_rng(11)
    names = _unit(rng.standard_normal((NAMES, DIM)))
    text = np.repeat(names, PER_NAME, axis=0)
    image = _unit(text + 0.8 * _unit(rng.standard_normal((N, DIM))))
    for row in range(0, DUPLICATED_NAMES * PER_NAME, 2):
        image[row + 1] = image[row]
    # Interleave the names so that tied products are not stored next to each other.
    order = rng.permutation(N)
    ids = [f"p{i:03d}" for i in range(N)]
    payloads = [{"name": f"name {int(r) // PER_NAME}", "row": int(r)} for r in order]
    return ids, {"text": text[order], "image": image[order]}, payloads


@pytest.fixture(scope="module", params=["edge", "memory"])
def store(request, products, tmp_path_factory) -> Iterator[VectorStore]:
    ids, vectors, payloads = products
    if request.param == "edge":
        s = open_store(Path(tmp_path_factory.mktemp("edge")) / "store")
    else:
        s = open_store(url=":memory:", collection="rrf_ties")
    s.ensure_collection(EncoderInfo("synthetic", DIM), {"name": "keyword"})
    s.upsert(
        [
            PointRecord(pid, {"text": vectors["text"][i], "image": vectors["image"][i]}, p, pid)
            for i, (pid, p) in enumerate(zip(ids, payloads, strict=True))
        ]
    )
    yield s
    s.close()


def _queries(products) -> list[QueryVectors]:
    _, vectors, _ = products
    rng = np.random.default_rng(5)
    out = []
    for row in (0, 17, 101, 230):  # duplicated names and plain ones
        noise = 0.15 * rng.standard_normal(DIM)
        out.append(QueryVectors(text=vectors["text"][row] + noise, image=vectors["image"][row]))
    return out


def _expected(oracle: Oracle, query: QueryVectors, cfg: FusionConfig) -> list[tuple[str, float]]:
    lists = [oracle.search("text", query.text, CANDIDATES), oracle.search("image", query.image, N)]
    weights = [cfg.w_text, cfg.w_image]
    if cfg.method == "rrf":
        return top_k(rrf_scores(lists, weights, cfg.rrf_k), K)
    return top_k(dbsf_scores(lists, weights), K)


def test_rrf_on_duplicates_equals_the_faiss_oracle(store, products) -> None:
    ids, vectors, payloads = products
    oracle = Oracle(ids, vectors, payloads)
    twin = {}  # exact duplicates: same text and image vector
    for i, pid in enumerate(ids):
        key = (vectors["text"][i].tobytes(), vectors["image"][i].tobytes())
        twin.setdefault(key, []).append(pid)
    pairs = [group for group in twin.values() if len(group) == 2]
    assert len(pairs) == DUPLICATED_NAMES * PER_NAME // 2
    searcher = Searcher(store, candidates=CANDIDATES)
    tied_hits = 0
    for query in _queries(products):
        for cfg, hits in zip(CONFIGS, searcher.search_grid(query, CONFIGS, k=K), strict=True):
            got = [(h.product_id, h.score) for h in hits]
            assert_same_topk(got, _expected(oracle, query, cfg))
            score = dict(got)
            for a, b in pairs:
                if a in score and b in score:
                    tied_hits += 1
                    assert score[a] == pytest.approx(score[b], abs=1e-12), (cfg.label, a, b)
    assert tied_hits > 0  # the queries reach duplicated products


def _stored(products, order: np.ndarray) -> StoredVectors:
    ids, vectors, payloads = products
    return StoredVectors(
        [ids[r] for r in order],
        vectors["text"][order],
        vectors["image"][order],
        np.zeros(N, np.float32),
        [payloads[r] for r in order],
    )


@pytest.mark.parametrize("cfg", CONFIGS[:2], ids=lambda c: c.label)
def test_benchmark_references_agree_on_duplicates(products, cfg: FusionConfig) -> None:
    """The suite's float64 oracle and FAISS lists give RRF recall 1 with shallow candidate
    lists, and the oracle's fused scores do not depend on the order of the stored rows."""
    depth = 4 * PER_NAME  # whole tied groups of text vectors
    vectors = _stored(products, np.arange(N))
    reversed_rows = _stored(products, np.arange(N)[::-1])
    oracle = ExactOracle(vectors, depth)
    faiss_index = FaissFused(vectors, depth)
    for query in _queries(products):
        exact = oracle.fused(query.text, query.image, 0.0, cfg, None)
        assert isinstance(exact, dict)
        again = ExactOracle(reversed_rows, depth).fused(query.text, query.image, 0.0, cfg, None)
        assert again == pytest.approx(exact, abs=1e-12)
        got = faiss_index.search(query.text, query.image, 0.0, cfg, K, None)
        assert oracle.recall(exact, got, K) == 1.0


def test_recall_guard_fails_below_the_floor() -> None:
    def row(recall: float) -> dict[str, Any]:
        return {"case": "RRF (k=60)", "edge": {"recall": recall}, "faiss": {"recall": 1.0}}

    assert recall_failures({"search": {"cases": [row(RECALL_FLOOR)]}}) == []
    failures = recall_failures({"search": {"cases": [row(0.969)]}})
    assert failures == [f"RRF (k=60) on edge: recall@10 0.969 < {RECALL_FLOOR}"]


def test_suite_selects_cases_by_name_part() -> None:
    chosen = [case.name for case in select_cases(["rrf", "DBSF"])]
    assert chosen == ["RRF (k=60)", "DBSF"]
    assert len(select_cases(None)) == len(select_cases([]))
    with pytest.raises(SystemExit, match="nothing-like-this names no search case"):
        select_cases(["nothing-like-this"])
