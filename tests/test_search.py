"""The query layer against the exact FAISS oracle on both backends (issue #2, acceptance 1 & 3).

For every query kind (text, image, text+image), with and without filters, and for each
fusion method, clipy's top-10 must equal the brute-force top-10 over the same vectors, and
each hit must carry its true text and image cosine scores.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from oracle import STORE_KINDS, Oracle, assert_same_topk, make_products, open_test_store

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.filters import Filter, matches, parse_filter
from clipy_qdrant.fusion import FusionConfig, dbsf_scores, rrf_scores, top_k
from clipy_qdrant.search import Hit, QueryVectors, Searcher
from clipy_qdrant.store import PointRecord, VectorStore, open_store

N, DIM, K = 600, 32, 10
# A shallow candidate depth forces the weighted path to deepen its lists (threshold bound).
CANDIDATES = 20
ENCODER = EncoderInfo("synthetic", DIM)

FILTERS: dict[str, Filter | None] = {
    "none": None,
    "eq": parse_filter(["gender=Men"]),
    "any+range": parse_filter(["baseColour=Red,Blue,Black", "year>=2012"]),
    "negation": parse_filter(["articleType!=Tshirts,Jeans", "season!=Summer"]),
    "narrow": parse_filter(["gender=Women", "articleType=Watches", "year=2010..2014"]),
}
CONFIGS = [
    FusionConfig("weighted", 0.5, 0.5),
    FusionConfig("weighted", 0.8, 0.2),
    FusionConfig("weighted", 0.0, 1.0),
    FusionConfig("weighted", 1.0, 0.0),
    FusionConfig("rrf", 1.0, 1.0, rrf_k=60),
    FusionConfig("rrf", 0.3, 0.7, rrf_k=2),
    FusionConfig("dbsf", 1.0, 1.0),
    FusionConfig("dbsf", 0.25, 0.75),
]


@pytest.fixture(scope="module")
def products() -> tuple[list[str], dict[str, np.ndarray], list[dict]]:
    return make_products(N, DIM, seed=7)


@pytest.fixture(scope="module")
def oracle(products) -> Oracle:
    ids, vectors, payloads = products
    return Oracle(ids, vectors, [dict(p, product_id=i) for i, p in zip(ids, payloads, strict=True)])


def _fill(store: VectorStore, products) -> VectorStore:
    ids, vectors, payloads = products
    store.ensure_collection(
        ENCODER,
        {
            "gender": "keyword",
            "articleType": "keyword",
            "baseColour": "keyword",
            "season": "keyword",
            "year": "integer",
        },
    )
    store.upsert(
        [
            PointRecord(
                pid,
                {"image": vectors["image"][i], "text": vectors["text"][i]},
                payloads[i],
                f"h{pid}",
            )
            for i, pid in enumerate(ids)
        ]
    )
    return store


@pytest.fixture(scope="module", params=STORE_KINDS)
def store(request, products, tmp_path_factory) -> Iterator[VectorStore]:
    s = open_test_store(request.param, tmp_path_factory.mktemp("store"), "search")
    yield _fill(s, products)
    assert s.has_fused() is (request.param != "edge-channels")
    s.close()


def _queries(products) -> dict[str, QueryVectors]:
    _, vectors, _ = products
    rng = np.random.default_rng(3)
    text_q = vectors["text"][5] + 0.3 * rng.standard_normal(DIM)
    image_q = vectors["image"][321] + 0.3 * rng.standard_normal(DIM)
    return {
        "text": QueryVectors(text=text_q, image=text_q),
        "image": QueryVectors(text=image_q, image=image_q),
        "text+image": QueryVectors(text=text_q, image=image_q),
    }


def _expected(
    oracle: Oracle, query: QueryVectors, flt: Filter | None, cfg: FusionConfig
) -> list[tuple[str, float]]:
    text_scores = oracle.scores("text", query.text)
    image_scores = oracle.scores("image", query.image)
    if cfg.method == "weighted":
        fused = {
            pid: cfg.w_text * text_scores[pid] + cfg.w_image * image_scores[pid]
            for pid, payload in zip(oracle.ids, oracle.payloads, strict=True)
            if matches(flt, payload)
        }
        return top_k(fused, K)
    text_list = oracle.search("text", query.text, CANDIDATES, flt)
    image_list = oracle.search("image", query.image, CANDIDATES, flt)
    weights = (cfg.w_text, cfg.w_image)
    if cfg.method == "rrf":
        fused = rrf_scores([text_list, image_list], weights, cfg.rrf_k)
    else:
        fused = dbsf_scores([text_list, image_list], weights)
    return top_k(fused, K)


def _check_components(
    hits: list[Hit], oracle: Oracle, query: QueryVectors, flt: Filter | None
) -> None:
    text_scores = oracle.scores("text", query.text)
    image_scores = oracle.scores("image", query.image)
    for hit in hits:
        assert hit.text_score == pytest.approx(text_scores[hit.product_id], abs=1e-5)
        assert hit.image_score == pytest.approx(image_scores[hit.product_id], abs=1e-5)
        assert matches(flt, hit.payload), f"{hit.product_id} violates the filter"
        assert hit.payload["product_id"] == hit.product_id


@pytest.mark.parametrize("filter_name", list(FILTERS))
@pytest.mark.parametrize("query_kind", ["text", "image", "text+image"])
def test_topk_equals_oracle_for_every_fusion(
    store, oracle, products, query_kind, filter_name
) -> None:
    searcher = Searcher(store, candidates=CANDIDATES)
    query = _queries(products)[query_kind]
    flt = FILTERS[filter_name]
    results = searcher.search_grid(query, CONFIGS, filters=flt, k=K)
    for cfg, hits in zip(CONFIGS, results, strict=True):
        want = _expected(oracle, query, flt, cfg)
        assert_same_topk([(h.product_id, h.score) for h in hits], want)
        _check_components(hits, oracle, query, flt)
        # The single-config path gives the same answer as the grid.
        single = searcher.search_vectors(query, filters=flt, k=K, fusion=cfg)
        assert_same_topk(
            [(h.product_id, h.score) for h in single], [(h.product_id, h.score) for h in hits]
        )


def test_weighted_fusion_is_exact_although_candidates_are_shallow(store, oracle, products) -> None:
    """A product deep in both lists can top the weighted sum; the bound check must find it."""
    _, vectors, _ = products
    # Query halfway between a product's text and image vectors: it is rank ~1 in neither list
    # by a wide margin but best on the sum.
    query = QueryVectors(text=vectors["text"][42], image=vectors["image"][99])
    searcher = Searcher(store, candidates=2)
    hits = searcher.search_vectors(query, k=K, fusion=FusionConfig("weighted", 0.5, 0.5))
    assert_same_topk(
        [(h.product_id, h.score) for h in hits], _expected(oracle, query, None, FusionConfig())
    )


def test_exclude_removes_products(store, products) -> None:
    ids, vectors, _ = products
    query = QueryVectors(text=vectors["text"][0], image=vectors["image"][0])
    searcher = Searcher(store, candidates=CANDIDATES)
    first = searcher.search_vectors(query, k=K)
    assert first[0].product_id == ids[0]
    again = searcher.search_vectors(query, k=K, exclude={ids[0]})
    assert ids[0] not in {h.product_id for h in again}
    assert [h.product_id for h in again][: K - 1] == [h.product_id for h in first][1:]


def test_filter_strings_are_parsed(store, products) -> None:
    query = _queries(products)["text"]
    hits = Searcher(store).search_vectors(query, filters=["gender=Men", "year>=2015"], k=K)
    assert hits and all(h.payload["gender"] == "Men" and h.payload["year"] >= 2015 for h in hits)


def test_filter_with_no_match_returns_nothing(store, products) -> None:
    query = _queries(products)["text"]
    assert Searcher(store).search_vectors(query, filters=["gender=Nobody"], k=K) == []


def test_backends_agree(products, tmp_path) -> None:
    """Edge and in-memory client return the same hits for the same data (acceptance 3)."""
    edge = _fill(open_store(tmp_path / "edge"), products)
    memory = _fill(open_store(url=":memory:", collection="parity"), products)
    try:
        for query in _queries(products).values():
            for flt in FILTERS.values():
                for cfg in CONFIGS:
                    a = Searcher(edge).search_vectors(query, filters=flt, k=K, fusion=cfg)
                    b = Searcher(memory).search_vectors(query, filters=flt, k=K, fusion=cfg)
                    assert_same_topk(
                        [(h.product_id, h.score) for h in a], [(h.product_id, h.score) for h in b]
                    )
    finally:
        edge.close()
        memory.close()
