"""Hubness correction: the values (against FAISS), their storage on both backends, and the
query layer's corrected text→image ranking against a brute-force oracle."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import faiss
import numpy as np
import pytest
from oracle import STORE_KINDS, Oracle, assert_same_topk, make_products, open_test_store

from clipy_qdrant.encoders.base import EncoderInfo, l2_normalize
from clipy_qdrant.errors import ConfigError
from clipy_qdrant.filters import Filter, matches, parse_filter
from clipy_qdrant.fusion import FusionConfig, dbsf_scores, rrf_scores, top_k
from clipy_qdrant.hubness import (
    LOW_QUANTILE,
    bank_of,
    hubness_values,
    query_gate,
    refresh_hubness,
)
from clipy_qdrant.search import QueryVectors, Searcher
from clipy_qdrant.store import (
    HUBNESS_KEY,
    IMAGE,
    TEXT,
    HubnessInfo,
    PointRecord,
    VectorStore,
    open_store,
)

N, DIM, K, TOP = 500, 24, 10, 10
CANDIDATES = 15
ENCODER = EncoderInfo("synthetic", DIM)
CONFIGS = [
    FusionConfig("weighted", 0.0, 1.0),
    FusionConfig("weighted", 0.5, 0.5),
    FusionConfig("weighted", 0.2, 0.8),
    FusionConfig("rrf", 1.0, 1.0, rrf_k=60),
    FusionConfig("dbsf", 0.5, 1.0),
]
FILTERS: dict[str, Filter | None] = {
    "none": None,
    "eq": parse_filter(["gender=Men"]),
    "narrow": parse_filter(["gender=Women", "year>=2013"]),
}


def faiss_hubness(images: np.ndarray, texts: np.ndarray, top: int) -> np.ndarray:
    """Reference: FAISS exact top-``top`` inner products over the distinct unit text rows."""
    bank = np.unique(l2_normalize(texts), axis=0)
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(np.ascontiguousarray(bank))
    scores, _ = index.search(np.ascontiguousarray(l2_normalize(images)), min(top, len(bank)))
    return np.maximum(scores.mean(axis=1), 0.0)


# --------------------------------------------------------------------------- the values


def test_hubness_values_equal_the_faiss_reference() -> None:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((300, 16)).astype(np.float32) * 3.0  # not unit: normalised
    texts = rng.standard_normal((200, 16)).astype(np.float32)
    got = hubness_values(images, texts, top=7, block=64)  # several blocks
    np.testing.assert_allclose(got, faiss_hubness(images, texts, 7), atol=1e-5)
    # top is capped at the bank size: then it is the mean over every text
    np.testing.assert_allclose(
        hubness_values(images[:5], texts[:3], top=10),
        np.maximum((l2_normalize(images[:5]) @ l2_normalize(texts[:3]).T).mean(1), 0),
        atol=1e-5,
    )


def test_duplicate_texts_count_once_and_hubs_score_high() -> None:
    rng = np.random.default_rng(1)
    texts = l2_normalize(rng.standard_normal((50, 8)))
    hub = texts[:20].mean(axis=0, keepdims=True)  # close to many texts
    loner = -hub  # far from them
    images = np.concatenate([hub, loner])
    values = hubness_values(images, texts, top=5)
    assert values[0] > values[1]
    repeated = np.concatenate([texts, np.repeat(texts[:1], 30, axis=0)])
    np.testing.assert_allclose(hubness_values(images, repeated, top=5), values, atol=1e-6)


@pytest.mark.parametrize(
    ("text", "gate"),
    [
        ("", 0.0),
        ("red", 0.0),
        ("navy blue", 0.0),
        ("red casual", 0.0),
        ("red casual shoes", 0.5),
        ("men's red shoes", 1.0),  # men, s, red, shoes: four words
        ("Puma Men Black Running Shoes", 1.0),
    ],
)
def test_query_gate_by_word_count(text: str, gate: float) -> None:
    assert query_gate(text) == gate


# --------------------------------------------------------------------------- stored values


@pytest.fixture(scope="module")
def products() -> tuple[list[str], dict[str, np.ndarray], list[dict]]:
    ids, vectors, payloads = make_products(N, DIM, seed=11)
    # Repeated product texts, as catalogs have: the bank holds each text once.
    vectors[TEXT][N - 40 :] = vectors[TEXT][:40]
    return ids, vectors, payloads


def _fill(store: VectorStore, products) -> VectorStore:
    ids, vectors, payloads = products
    store.ensure_collection(ENCODER, {"gender": "keyword", "year": "integer"})
    store.upsert(
        [
            PointRecord(pid, {IMAGE: vectors[IMAGE][i], TEXT: vectors[TEXT][i]}, payloads[i])
            for i, pid in enumerate(ids)
        ]
    )
    return store


@pytest.fixture(scope="module", params=STORE_KINDS)
def store(request, products, tmp_path_factory) -> Iterator[VectorStore]:
    s = open_test_store(request.param, tmp_path_factory.mktemp("store"), "hubness")
    _fill(s, products)
    assert s.has_fused() is (request.param != "edge-channels")
    assert s.hubness_info() is None
    info = refresh_hubness(s)
    assert info is not None
    yield s
    s.close()


@pytest.fixture(scope="module")
def reference(products) -> dict[str, float]:
    ids, vectors, _ = products
    values = np.round(faiss_hubness(vectors[IMAGE], vectors[TEXT], TOP).astype(np.float64), 4)
    return dict(zip(ids, values.tolist(), strict=True))


def test_refresh_writes_every_value_and_the_record(store, products, reference) -> None:
    ids, _, payloads = products
    info = store.hubness_info()
    assert info is not None
    assert (info.top, info.points, info.bank) == (TOP, N, N - 40)
    assert info.minimum == pytest.approx(min(reference.values()), abs=1e-6)
    # the low-hubness threshold: the LOW_QUANTILE quantile of the stored values, indexed
    stored_values = sorted(p.payload[HUBNESS_KEY] for p in store.scroll())
    assert info.low == stored_values[int(LOW_QUANTILE * (N - 1))]
    assert info.minimum < info.low
    assert store.indexed_fields()[HUBNESS_KEY] == "float"
    stored = {p.product_id: p.payload for p in store.scroll()}
    for pid, payload in zip(ids, payloads, strict=True):
        assert stored[pid][HUBNESS_KEY] == pytest.approx(reference[pid], abs=2e-4)
        # the rest of the payload is kept
        assert stored[pid]["productDisplayName"] == payload["productDisplayName"]


def test_hubness_record_survives_reopening_and_can_be_marked_stale(products, tmp_path) -> None:
    s = _fill(open_store(tmp_path / "store"), products)
    info = refresh_hubness(s)
    s.close()
    s = open_store(tmp_path / "store")
    try:
        assert s.hubness_info() == info
        s.set_hubness_info(None)
    finally:
        s.close()
    s = open_store(tmp_path / "store")
    try:
        assert s.hubness_info() is None
        # an upsert replaces the whole payload, hubness included
        vectors = products[1]
        s.upsert([PointRecord("10000", {IMAGE: vectors[IMAGE][0], TEXT: vectors[TEXT][0]}, {})])
        (point,) = s.retrieve(["10000"])
        assert HUBNESS_KEY not in point.payload
    finally:
        s.close()


def test_refresh_in_blocks_with_a_sampled_bank(products, tmp_path) -> None:
    """A bank above ``max_bank`` distinct texts is a fixed sample; blocks change nothing."""
    ids, vectors, _ = products
    s = _fill(open_store(tmp_path / "store"), products)
    try:
        info = refresh_hubness(s, max_bank=100, block=64)
        assert info is not None and (info.bank, info.points) == (100, N)
        bank = bank_of(vectors[TEXT], 100)
        assert len(bank) == 100 and len(np.unique(bank, axis=0)) == 100
        want = np.round(faiss_hubness(vectors[IMAGE], bank, TOP).astype(np.float64), 4)
        got = {p.product_id: p.payload[HUBNESS_KEY] for p in s.scroll()}
        np.testing.assert_allclose([got[i] for i in ids], want, atol=2e-4)
        # the sample is fixed: a second refresh writes the same values
        assert refresh_hubness(s, max_bank=100) == info
    finally:
        s.close()


def test_refresh_of_an_empty_store_writes_nothing(tmp_path) -> None:
    s = open_store(tmp_path / "store")
    s.ensure_collection(ENCODER)
    try:
        assert refresh_hubness(s) is None and s.hubness_info() is None
    finally:
        s.close()


# --------------------------------------------------------------------------- corrected search


def _expected(
    oracle: Oracle,
    reference: dict[str, float],
    query: QueryVectors,
    flt: Filter | None,
    cfg: FusionConfig,
) -> list[tuple[str, float]]:
    text = oracle.scores(TEXT, query.text)
    image = {
        pid: s - query.image_hubness * reference[pid]
        for pid, s in oracle.scores(IMAGE, query.image).items()
    }
    allowed = [pid for pid, p in zip(oracle.ids, oracle.payloads, strict=True) if matches(flt, p)]
    if cfg.method == "weighted":
        return top_k({p: cfg.w_text * text[p] + cfg.w_image * image[p] for p in allowed}, K)
    # rrf / dbsf: the engine's candidate lists (by cosine), the image list re-ranked by the
    # corrected score.
    text_list = oracle.search(TEXT, query.text, CANDIDATES, flt)
    image_ids = [pid for pid, _ in oracle.search(IMAGE, query.image, CANDIDATES, flt)]
    image_list = sorted(((p, image[p]) for p in image_ids), key=lambda x: -x[1])
    weights = (cfg.w_text, cfg.w_image)
    if cfg.method == "rrf":
        return top_k(rrf_scores([text_list, image_list], weights, cfg.rrf_k), K)
    return top_k(dbsf_scores([text_list, image_list], weights), K)


@pytest.fixture(scope="module")
def oracle(products) -> Oracle:
    ids, vectors, payloads = products
    return Oracle(ids, vectors, payloads)


@pytest.mark.parametrize("filter_name", list(FILTERS))
@pytest.mark.parametrize("c_q", [0.5, 1.5])
def test_corrected_search_equals_the_oracle(
    store, oracle, reference, products, c_q, filter_name
) -> None:
    _, vectors, _ = products
    rng = np.random.default_rng(5)
    q = vectors[TEXT][7] + 0.4 * rng.standard_normal(DIM)
    query = QueryVectors(text=q, image=q, image_hubness=c_q)
    searcher = Searcher(store, candidates=CANDIDATES, hubness=1.0)
    flt = FILTERS[filter_name]
    results = searcher.search_grid(query, CONFIGS, filters=flt, k=K)
    plain = Searcher(store, candidates=CANDIDATES, hubness=0.0).search_grid(
        QueryVectors(text=q, image=q), CONFIGS[:1], filters=flt, k=K
    )[0]
    for cfg, hits in zip(CONFIGS, results, strict=True):
        want = _expected(oracle, reference, query, flt, cfg)
        assert_same_topk([(h.product_id, h.score) for h in hits], want, tol=3e-4)
        cosines = oracle.scores(IMAGE, q)
        for h in hits:
            assert h.image_penalty == pytest.approx(c_q * reference[h.product_id], abs=3e-4)
            assert h.image_score + h.image_penalty == pytest.approx(cosines[h.product_id], abs=1e-5)
            assert HUBNESS_KEY not in h.payload
    # The correction changes the image-only ranking (else this test could not fail).
    assert [h.product_id for h in results[0]] != [h.product_id for h in plain]


def test_image_queries_are_never_corrected(store, oracle, products) -> None:
    _, vectors, _ = products
    query = QueryVectors(text=vectors[IMAGE][3], image=vectors[IMAGE][3])
    hits = Searcher(store, hubness=1.0).search_vectors(
        query, k=K, fusion=FusionConfig("weighted", 0, 1)
    )
    assert all(h.image_penalty == 0.0 for h in hits)
    assert_same_topk([(h.product_id, h.score) for h in hits], oracle.search(IMAGE, query.image, K))


def test_searcher_hubness_settings(store, products, tmp_path) -> None:
    class Enc:
        info = ENCODER
        default_hubness = 0.7
        trained_split = None

        def encode_texts(self, texts, batch_size=64):
            _, vectors, _ = products
            return vectors[TEXT][: len(texts)]

        def encode_images(self, images, batch_size=32):
            raise AssertionError("no images here")

    searcher = Searcher(store, Enc())  # type: ignore[arg-type]
    assert searcher.hubness == 0.7
    long_query, short_query = searcher.embed_many(["a long product name here", "red"], [None, None])
    assert long_query.image_hubness == pytest.approx(0.7)
    assert short_query.image_hubness == 0.0
    assert Searcher(store).hubness == 0.0  # no encoder: off unless asked
    with pytest.raises(ConfigError, match="hubness must be"):
        Searcher(store, hubness=-1.0)
    bare = _fill(open_store(tmp_path / "bare"), products)  # no hubness values yet
    try:
        assert Searcher(bare, Enc()).hubness == 0.0  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="no hubness values"):
            Searcher(bare, hubness=1.0)
    finally:
        bare.close()


# --------------------------------------------------------------------------- low-hubness bound


def test_hubness_record_json_with_and_without_the_low_threshold() -> None:
    info = HubnessInfo(top=10, bank=50, points=7, minimum=0.125, low=0.25)
    assert HubnessInfo.from_json(info.to_json()) == info
    old = {"top": 10, "bank": 50, "points": 7, "minimum": 0.125}  # written without ``low``
    assert HubnessInfo.from_json(old) == dataclasses.replace(info, low=None)
    assert "low" not in HubnessInfo.from_json(old).to_json()


def _traced(searcher: Searcher) -> dict[str, list]:
    """Wrap the retriever to record the low-hubness lists it asks for and the channels each
    weighted fusion sees."""
    retriever = searcher.retriever
    trace: dict[str, list] = {"low": [], "fused": []}
    with_low, fuse = retriever.with_low_hub, retriever.fuse_weighted

    def low(*args, **kwargs):
        trace["low"].append(args)
        return with_low(*args, **kwargs)

    def fused(query, channels, cfg, k, state):
        trace["fused"].append(channels)
        return fuse(query, channels, cfg, k, state)

    retriever.with_low_hub = low  # type: ignore[method-assign]
    retriever.fuse_weighted = fused  # type: ignore[method-assign]
    return trace


@pytest.mark.parametrize("filter_name", list(FILTERS))
def test_low_hubness_bound_equals_the_oracle_on_many_queries(
    store, oracle, reference, products, filter_name
) -> None:
    """Many strongly corrected queries: the low-hubness list is searched for some of them,
    and every top-k equals the brute-force one, as with the bound from the smallest hubness
    alone (a record without the threshold)."""
    _, vectors, _ = products
    rng = np.random.default_rng(11)
    flt = FILTERS[filter_name]
    configs = [FusionConfig("weighted", 0.0, 1.0), FusionConfig("weighted", 0.5, 0.5)]
    searcher = Searcher(store, candidates=CANDIDATES, hubness=1.0)
    trace = _traced(searcher)
    fallback = Searcher(store, candidates=CANDIDATES, hubness=1.0)
    info = fallback.retriever.hubness_info
    assert info is not None and info.low is not None
    fallback.retriever.hubness_info = dataclasses.replace(info, low=None)
    fallback_trace = _traced(fallback)
    for _ in range(30):
        q = vectors[TEXT][int(rng.integers(N))] + 0.5 * rng.standard_normal(DIM)
        query = QueryVectors(text=q, image=q, image_hubness=float(rng.choice([1.0, 2.0, 4.0])))
        got = searcher.search_grid(query, configs, filters=flt, k=K)
        old = fallback.search_grid(query, configs, filters=flt, k=K)
        for cfg, hits, old_hits in zip(configs, got, old, strict=True):
            want = _expected(oracle, reference, query, flt, cfg)
            assert_same_topk([(h.product_id, h.score) for h in hits], want, tol=3e-4)
            assert [h.product_id for h in hits] == [h.product_id for h in old_hits]
    assert len(trace["low"]) >= 5  # the new bound is exercised
    assert not fallback_trace["low"]  # no threshold recorded: the bound from the minimum


def test_a_product_found_only_by_the_low_hubness_list_is_in_the_top_k(
    store, oracle, reference, products
) -> None:
    """With a strong correction a low-hubness product of modest cosine wins; the top-k holds
    one found in the low-hubness list but in neither main list, and equals the oracle."""
    _, vectors, _ = products
    info = store.hubness_info()
    assert info is not None and info.low is not None
    rng = np.random.default_rng(3)
    cfg = FusionConfig("weighted", 0.0, 1.0)
    found_only_there = 0
    for _ in range(40):
        searcher = Searcher(store, candidates=CANDIDATES, hubness=1.0)
        trace = _traced(searcher)
        q = vectors[TEXT][int(rng.integers(N))] + 0.5 * rng.standard_normal(DIM)
        query = QueryVectors(text=q, image=q, image_hubness=4.0)
        hits = searcher.search_vectors(query, k=K, fusion=cfg)
        want = _expected(oracle, reference, query, None, cfg)
        assert_same_topk([(h.product_id, h.score) for h in hits], want, tol=3e-4)
        last = trace["fused"][-1]
        if last.low_hub is None:
            continue
        main = {p.product_id for points in last.lists.values() for p in points}
        low = {p.product_id for p in last.low_hub}
        assert all(reference[pid] < info.low for pid in low)
        found_only_there += any(h.product_id in low - main for h in hits)
    assert found_only_there > 0


# --------------------------------------------------------------------------- preload


def test_preload_reads_each_hubness_and_point_id_in_one_pass(
    store, oracle, reference, products, monkeypatch
) -> None:
    """After ``preload`` a corrected search reads nothing product by product: its only
    ``retrieve`` is the hits' payloads. A searcher without it reads point ids and hubness
    values as the query goes; both give the oracle's top-k."""
    _, vectors, _ = products
    calls: list[int] = []
    original = store._retrieve

    def counting(ids, **kwargs):
        calls.append(len(ids))
        return original(ids, **kwargs)

    monkeypatch.setattr(store, "_retrieve", counting)
    q = vectors[TEXT][11] + 0.4 * np.random.default_rng(8).standard_normal(DIM)
    query = QueryVectors(text=q, image=q, image_hubness=1.0)
    cfg = FusionConfig("weighted", 0.5, 0.5)
    want = _expected(oracle, reference, query, None, cfg)

    store._product_of.clear()
    fresh = Searcher(store, candidates=CANDIDATES, hubness=1.0)
    cold = fresh.search_vectors(query, k=K, fusion=cfg)
    assert len(calls) > 1  # point ids and hubness values read as the query goes

    store._product_of.clear()
    searcher = Searcher(store, candidates=CANDIDATES, hubness=1.0)
    assert searcher.preload() == N
    assert len(store._product_of) == N
    assert searcher.retriever._hubness == pytest.approx(reference, abs=1e-4)
    calls.clear()
    warm = searcher.search_vectors(query, k=K, fusion=cfg)
    assert calls == [K]  # the hits' payloads only
    for hits in (cold, warm):
        assert_same_topk([(h.product_id, h.score) for h in hits], want, tol=3e-4)
    assert [h.product_id for h in warm] == [h.product_id for h in cold]
    for a, b in zip(warm, cold, strict=True):  # one score may come from a list, one exact
        assert a.score == pytest.approx(b.score, abs=1e-6) and a.payload == b.payload
        assert a.image_penalty == b.image_penalty


def test_preload_skips_a_store_above_its_limit(store) -> None:
    searcher = Searcher(store, candidates=CANDIDATES, hubness=1.0)
    assert searcher.retriever.preload(limit=N - 1) == 0
    assert searcher.retriever._hubness == {}
