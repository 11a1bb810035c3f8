"""The lexical channel inside search, against brute force on both backends (issue #23).

Three-channel weighted fusion (text cosine, image cosine, normalised BM25) must equal the
brute-force top-k over the same vectors and texts (FAISS oracle for the dense channels,
:class:`~clipy_qdrant.lexical.Bm25Reference` for BM25), with and without filters, also when
the candidate lists are shallow; RRF and DBSF must equal the fusion of the reference lists;
every hit carries its true lexical score. Spelling correction runs before the channels.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import numpy as np
import pytest
from oracle import STORE_KINDS, Oracle, assert_same_topk, make_products, open_test_store

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.filters import Filter, matches, parse_filter
from clipy_qdrant.fusion import FusionConfig, dbsf_scores, rrf_scores, top_k
from clipy_qdrant.lexical import Bm25Params, Bm25Reference, document_vector
from clipy_qdrant.search import QueryVectors, Searcher
from clipy_qdrant.spelling import Vocabulary
from clipy_qdrant.store import PointRecord, VectorStore, open_store

N, DIM, K = 400, 24, 10
CANDIDATES = 15
ENCODER = EncoderInfo("synthetic", DIM)
FILLER = ("cotton", "slim", "fit", "printed", "classic", "sports", "casual", "solid", "logo")

FILTERS: dict[str, Filter | None] = {
    "none": None,
    "eq": parse_filter(["gender=Men"]),
    "any+range": parse_filter(["baseColour=Red,Blue,Black", "year>=2012"]),
}
WEIGHTED = [
    FusionConfig("weighted", 0.5, 0.5, w_lexical=0.5),
    FusionConfig("weighted", 0.2, 0.1, w_lexical=2.0),
    FusionConfig("weighted", 1.0, 0.0, w_lexical=0.3),
    FusionConfig("weighted", 0.5, 0.5),
]
RANKED = [
    FusionConfig("rrf", 1.0, 1.0, rrf_k=60, w_lexical=1.0),
    FusionConfig("rrf", 0.3, 0.7, rrf_k=2, w_lexical=0.5),
    FusionConfig("dbsf", 1.0, 1.0, w_lexical=1.0),
    FusionConfig("dbsf", 0.25, 0.75, w_lexical=2.0),
]
QUERIES = ("red watches", "classic blue jeans cotton", "slim fit kurtas")


def _texts(payloads: list[dict]) -> list[str]:
    """Product names with random filler words (various lengths and repeats); a few texts have
    no token at all (no lexical vector)."""
    rng = random.Random(5)
    out = []
    for i, p in enumerate(payloads):
        if i % 97 == 13:
            out.append("-- / --")
            continue
        extra = [rng.choice(FILLER) for _ in range(rng.randint(0, 9))]
        out.append(" ".join([p["productDisplayName"], *extra]))
    return out


@pytest.fixture(scope="module")
def catalog() -> tuple[list[str], dict[str, np.ndarray], list[dict], list[str]]:
    ids, vectors, payloads = make_products(N, DIM, seed=11)
    return ids, vectors, payloads, _texts(payloads)


@pytest.fixture(scope="module")
def params(catalog) -> Bm25Params:
    return Bm25Params.for_texts(catalog[3])


@pytest.fixture(scope="module")
def oracle(catalog) -> Oracle:
    ids, vectors, payloads, _ = catalog
    return Oracle(ids, vectors, [dict(p, product_id=i) for i, p in zip(ids, payloads, strict=True)])


@pytest.fixture(scope="module")
def reference(catalog, params) -> Bm25Reference:
    return Bm25Reference(catalog[3], params)


@pytest.fixture(scope="module", params=STORE_KINDS)
def store(request, catalog, params, tmp_path_factory) -> Iterator[VectorStore]:
    ids, vectors, payloads, texts = catalog
    s = open_test_store(request.param, tmp_path_factory.mktemp("store"), "lexical_search")
    s.ensure_collection(
        ENCODER,
        {"gender": "keyword", "baseColour": "keyword", "articleType": "keyword", "year": "integer"},
    )
    s.set_bm25_params(params)
    s.upsert(
        [
            PointRecord(
                pid,
                {"image": vectors["image"][i], "text": vectors["text"][i]},
                payloads[i],
                f"h{pid}",
                document_vector(texts[i], params),
            )
            for i, pid in enumerate(ids)
        ]
    )
    s.save_vocabulary(Vocabulary.from_texts(texts))
    yield s
    s.close()


def _query(searcher: Searcher, catalog, text: str) -> QueryVectors:
    _, vectors, _, _ = catalog
    rng = np.random.default_rng(len(text))
    text_q = vectors["text"][7] + 0.4 * rng.standard_normal(DIM)
    return searcher.query_vectors(text, text_q, None)


def _lexical(reference: Bm25Reference, query: QueryVectors, oracle: Oracle) -> dict[str, float]:
    """Normalised reference BM25 of every product for the query's (corrected) text."""
    assert query.lexical is not None
    raw = reference.scores(query.lexical.text)
    bound = query.lexical.bound
    return {pid: float(s) / bound for pid, s in zip(oracle.ids, raw, strict=True)}


def _expected(oracle, reference, query, flt, cfg) -> list[tuple[str, float]]:
    """Brute-force three-channel weighted fusion over every product matching ``flt``."""
    text = oracle.scores("text", query.text)
    image = oracle.scores("image", query.image)
    lexical = _lexical(reference, query, oracle)
    allowed = [pid for pid, p in zip(oracle.ids, oracle.payloads, strict=True) if matches(flt, p)]
    fused = {
        pid: cfg.w_text * text[pid] + cfg.w_image * image[pid] + cfg.w_lexical * lexical[pid]
        for pid in allowed
    }
    return top_k(fused, K)


@pytest.mark.parametrize("filter_name", list(FILTERS))
@pytest.mark.parametrize("text", QUERIES)
def test_three_channel_weighted_fusion_equals_brute_force(
    store, catalog, oracle, reference, text, filter_name
) -> None:
    searcher = Searcher(store, candidates=CANDIDATES)
    assert searcher.lexical is not None
    query = _query(searcher, catalog, text)
    flt = FILTERS[filter_name]
    lexical = _lexical(reference, query, oracle)
    for cfg, hits in zip(
        WEIGHTED, searcher.search_grid(query, WEIGHTED, filters=flt, k=K), strict=True
    ):
        assert_same_topk(
            [(h.product_id, h.score) for h in hits], _expected(oracle, reference, query, flt, cfg)
        )
        for hit in hits:
            assert hit.lexical_score == pytest.approx(lexical[hit.product_id], abs=1e-5)
            assert matches(flt, hit.payload)
            assert "lexical_text" not in hit.payload


def test_weighted_fusion_is_exact_with_two_candidates(store, catalog, oracle, reference) -> None:
    """Depth 2 forces the threshold algorithm to deepen all three lists."""
    searcher = Searcher(store, candidates=2)
    query = _query(searcher, catalog, "classic blue jeans cotton")
    cfg = FusionConfig("weighted", 0.3, 0.3, w_lexical=1.5)
    hits = searcher.search_vectors(query, k=K, fusion=cfg)
    assert_same_topk(
        [(h.product_id, h.score) for h in hits], _expected(oracle, reference, query, None, cfg)
    )


@pytest.mark.parametrize("text", QUERIES)
def test_rank_fusions_over_three_lists_equal_reference(
    store, catalog, oracle, reference, text
) -> None:
    """RRF and DBSF fuse the three candidate lists. BM25 ties often (equal lengths, equal
    term counts), and a tie's order is the engine's, so the lexical list is checked against
    the reference up to ties, then fused with the reference dense lists."""
    searcher = Searcher(store, candidates=CANDIDATES)
    query = _query(searcher, catalog, text)
    assert query.lexical is not None
    lexical = _lexical(reference, query, oracle)
    engine = [
        (p.product_id, query.lexical.normalise(p.score))
        for p in store.search_lexical(query.lexical.vector, CANDIDATES)
    ]
    assert_same_topk(engine, top_k({i: s for i, s in lexical.items() if s > 0}, CANDIDATES))
    lists = [
        oracle.search("text", query.text, CANDIDATES),
        oracle.search("image", query.image, CANDIDATES),
        engine,
    ]
    for cfg, hits in zip(RANKED, searcher.search_grid(query, RANKED, k=K), strict=True):
        weights = (cfg.w_text, cfg.w_image, cfg.w_lexical)
        if cfg.method == "rrf":
            fused = rrf_scores(lists, weights, cfg.rrf_k)
        else:
            fused = dbsf_scores(lists, weights)
        assert_same_topk([(h.product_id, h.score) for h in hits], top_k(fused, K))


def test_fusion_reads_no_vectors_and_the_payloads_of_the_hits_only(
    store, catalog, oracle, reference, monkeypatch
) -> None:
    """Candidates missing from a channel's list are scored by the engine (no stored vectors
    read into Python), the channel queries read no payload, and one retrieve reads the
    payloads of the final hits; the result stays the brute-force one."""
    searcher = Searcher(store, candidates=CANDIDATES)
    query = _query(searcher, catalog, "classic blue jeans cotton")
    cfg = FusionConfig("weighted", 0.5, 0.5, w_lexical=0.5)
    searches: list[object] = []
    retrieves: list[tuple[int, object, bool]] = []
    search, retrieve = store.search, store.retrieve

    def spy_search(*args, **kwargs):
        searches.append(kwargs.get("with_payload", True))
        return search(*args, **kwargs)

    def spy_retrieve(ids, **kwargs):
        retrieves.append(
            (len(ids), kwargs.get("with_payload", True), kwargs.get("with_vectors", False))
        )
        return retrieve(ids, **kwargs)

    monkeypatch.setattr(store, "search", spy_search)
    monkeypatch.setattr(store, "retrieve", spy_retrieve)
    hits = searcher.search_vectors(query, k=K, fusion=cfg)
    assert_same_topk(
        [(h.product_id, h.score) for h in hits], _expected(oracle, reference, query, None, cfg)
    )
    assert all(h.payload["product_id"] == h.product_id for h in hits)
    assert len(searches) >= 3 and all(payload is False for payload in searches)
    assert retrieves == [(K, True, False)]


def test_misspelt_query_is_corrected_for_every_channel(store, catalog) -> None:
    searcher = Searcher(store, candidates=CANDIDATES)
    _, vectors, _, _ = catalog
    typed = _query(searcher, catalog, "red wacthes")
    assert typed.correction is not None and typed.correction.corrected == "red watches"
    assert typed.lexical is not None and typed.lexical.text == "red watches"
    as_typed = searcher.query_vectors("red wacthes", vectors["text"][7], None, as_typed=True)
    assert as_typed.correction is None and as_typed.lexical is not None
    assert as_typed.lexical.text == "red wacthes"
    # A heavy lexical weight: the synthetic dense vectors know nothing of words.
    cfg = FusionConfig("weighted", 0.1, 0.1, w_lexical=10.0)
    corrected = searcher.search_vectors(typed, k=3, fusion=cfg)
    assert all(h.payload["productDisplayName"].startswith("Red Watches") for h in corrected)
    as_typed_hits = searcher.search_vectors(as_typed, k=3, fusion=cfg)
    assert not any("Watches" in h.payload["productDisplayName"] for h in as_typed_hits)


def test_preload_builds_the_spelling_index_before_the_first_query(store) -> None:
    """A server's searcher builds the corrector's candidate index at start-up (``preload``),
    so that no request waits for it; with spelling off it is not built."""
    searcher = Searcher(store, candidates=CANDIDATES)
    assert searcher.lexical is not None
    assert searcher.lexical.corrector._delete_index is None
    searcher.preload()
    index = searcher.lexical.corrector._delete_index
    assert index is not None and "watches" in index["wtches"]  # "watches" less one letter
    assert searcher.correct("red wacthes") == searcher.lexical.correct("red wacthes")
    assert searcher.lexical.corrector._delete_index is index  # built once
    unspelt = Searcher(store, candidates=CANDIDATES, spelling=False)
    unspelt.preload()
    assert unspelt.lexical is not None and unspelt.lexical.corrector._delete_index is None


def test_store_without_lexical_channel_still_searches(catalog, tmp_path) -> None:
    """A store whose metadata records no lexical vector (one created before the channel) has
    no lexical channel and no correction; every fusion still works."""
    ids, vectors, payloads, _ = catalog
    with open_store(tmp_path / "old") as s:
        s.ensure_collection(ENCODER, {"gender": "keyword"})
        s.upsert(
            [
                PointRecord(pid, {"image": vectors["image"][i], "text": vectors["text"][i]}, p)
                for i, (pid, p) in enumerate(zip(ids[:50], payloads, strict=False))
            ]
        )
    meta_file = tmp_path / "old" / "clipy.json"
    meta = json.loads(meta_file.read_text())
    del meta["lexical"]
    meta_file.write_text(json.dumps(meta))
    with open_store(tmp_path / "old") as s:
        assert not s.has_lexical()
        searcher = Searcher(s, candidates=CANDIDATES)
        assert searcher.lexical is None
        query = searcher.query_vectors("red wacthes", vectors["text"][3], None)
        assert query.lexical is None and query.correction is None
        for cfg in (*WEIGHTED, *RANKED):
            hits = searcher.search_vectors(query, k=5, fusion=cfg)
            assert len(hits) == 5 and all(h.lexical_score == 0.0 for h in hits)
