"""The fused vector (``[t ; i ; r]``, :mod:`clipy_qdrant.store.fused`) on both backends: what
the store writes and keeps, what turns it off, and that weighted search on it asks the engine
for one dense list and gives the channel path's results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from oracle import Oracle, assert_same_topk, make_products

from clipy_qdrant.encoders.base import EncoderInfo, l2_normalize
from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.hubness import refresh_hubness
from clipy_qdrant.search import QueryVectors, Searcher
from clipy_qdrant.store import (
    HUBNESS_KEY,
    IMAGE,
    TEXT,
    CollectionOptions,
    PointRecord,
    VectorStore,
    open_store,
)
from clipy_qdrant.store.copy import copy_store
from clipy_qdrant.store.fused import FUSED, fused_dim, fused_query, stored_fused

N, DIM, K = 300, 16, 10
ENCODER = EncoderInfo("synthetic", DIM)


@pytest.fixture(scope="module")
def products() -> tuple[list[str], dict[str, np.ndarray], list[dict]]:
    return make_products(N, DIM, seed=21)


def _records(products, rows: range | None = None) -> list[PointRecord]:
    ids, vectors, payloads = products
    rows = rows if rows is not None else range(len(ids))
    return [
        PointRecord(ids[i], {IMAGE: vectors[IMAGE][i], TEXT: vectors[TEXT][i]}, payloads[i])
        for i in rows
    ]


def _open(kind: str, folder: Path, options: CollectionOptions | None = None) -> VectorStore:
    if kind == "memory":
        return open_store(url=":memory:", collection=f"fused_{folder.name}", options=options)
    return open_store(folder / "store", options=options)


@pytest.fixture(scope="module", params=["edge", "memory"])
def store(request, products, tmp_path_factory) -> Iterator[VectorStore]:
    s = _open(request.param, tmp_path_factory.mktemp("fused"))
    s.ensure_collection(ENCODER, {"gender": "keyword", "year": "integer"})
    s.upsert(_records(products))
    assert s.has_fused()
    assert refresh_hubness(s) is not None
    s.build_index()
    yield s
    s.close()


def _last_coordinates(store: VectorStore) -> dict[str, float]:
    """Each product's stored fused vector's last value, read by the engine: the score of the
    query that is 1 there and 0 elsewhere."""
    unit = np.zeros(fused_dim(DIM), np.float32)
    unit[-1] = 1.0
    points = store.search(FUSED, unit, store.count(), with_payload=False, exact=True)
    return {p.product_id: p.score for p in points}


def test_the_fused_vector_holds_both_channels_and_the_hubness(store, products) -> None:
    ids, vectors, _ = products
    hubness = {p.product_id: p.payload[HUBNESS_KEY] for p in store.scroll()}
    last = _last_coordinates(store)
    assert set(last) == set(ids)
    for pid in ids:
        assert last[pid] == pytest.approx(hubness[pid], abs=1e-6)
    assert len(set(hubness.values())) > 10  # the values differ: the check could fail
    # Each half is the unit channel vector: a query with one half set scores its cosine.
    rng = np.random.default_rng(0)
    q_t, q_i = l2_normalize(rng.standard_normal((2, DIM)).astype(np.float32))
    for w_text, w_image, c_q in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.3, 0.7, 0.8)]:
        query = fused_query(q_t, q_i, w_text, w_image, c_q)
        got = {
            p.product_id: p.score
            for p in store.search(FUSED, query, N, with_payload=False, exact=True)
        }
        text, image = l2_normalize(vectors[TEXT]) @ q_t, l2_normalize(vectors[IMAGE]) @ q_i
        for row, pid in enumerate(ids):
            want = w_text * text[row] + w_image * (image[row] - c_q * hubness[pid])
            assert got[pid] == pytest.approx(want, abs=1e-5)


def test_reads_never_return_the_fused_vector(store, products) -> None:
    ids = products[0]
    (point,) = store.retrieve([ids[0]], with_vectors=True)
    assert set(point.vectors) == {IMAGE, TEXT}
    assert all(set(p.vectors) == {IMAGE, TEXT} for p in store.scroll(with_vectors=True))


def test_weighted_search_asks_for_one_dense_list(store, products, monkeypatch) -> None:
    """A weighted config with both channels searches the fused vector (plus exact queries
    for the hits' text and image scores); image-only weighting and RRF take the channel
    lists. Both give the brute-force top-k."""
    ids, vectors, payloads = products
    oracle = Oracle(ids, vectors, payloads)
    searcher = Searcher(store, candidates=15)
    asked: list[tuple[str, bool]] = []
    search = store.search

    def spy(using, vector, limit, flt=None, **kwargs):
        asked.append((using, bool(kwargs.get("exact", False))))
        return search(using, vector, limit, flt, **kwargs)

    monkeypatch.setattr(store, "search", spy)
    rng = np.random.default_rng(4)
    q = vectors[TEXT][9] + 0.3 * rng.standard_normal(DIM)
    query = QueryVectors(text=q, image=q)
    for cfg in [FusionConfig("weighted", 0.5, 0.5), FusionConfig("weighted", 0.8, 0.2)]:
        asked.clear()
        hits = searcher.search_vectors(query, k=K, fusion=cfg)
        text, image = oracle.scores(TEXT, q), oracle.scores(IMAGE, q)
        want = sorted(
            ((p, cfg.w_text * text[p] + cfg.w_image * image[p]) for p in ids),
            key=lambda x: (-x[1], x[0]),
        )[:K]
        assert_same_topk([(h.product_id, h.score) for h in hits], want)
        for h in hits:
            assert h.text_score == pytest.approx(text[h.product_id], abs=1e-5)
            assert h.image_score == pytest.approx(image[h.product_id], abs=1e-5)
        assert [u for u, exact in asked if not exact] == [FUSED]
        assert sorted(u for u, exact in asked if exact) == [IMAGE, TEXT]  # the hits' scores
    asked.clear()
    searcher.search_vectors(query, k=K, fusion=FusionConfig("weighted", 0.0, 1.0))
    assert FUSED not in [u for u, _ in asked]
    asked.clear()
    searcher.search_vectors(query, k=K, fusion=FusionConfig("rrf", 1.0, 1.0))
    assert FUSED not in [u for u, _ in asked]


@pytest.mark.parametrize("kind", ["edge", "memory"])
def test_a_product_with_one_channel_turns_the_fused_vector_off(kind, products, tmp_path) -> None:
    ids, vectors, payloads = products
    store = _open(kind, tmp_path)
    try:
        store.ensure_collection(ENCODER, {"gender": "keyword"})
        store.upsert(_records(products, range(N - 1)))
        assert store.has_fused()
        store.upsert([PointRecord(ids[-1], {IMAGE: vectors[IMAGE][-1]}, payloads[-1])])
        assert not store.has_fused()  # recorded: searches take the channel lists
        q = vectors[TEXT][5]
        hits = Searcher(store).search_vectors(QueryVectors(text=q, image=q), k=3, exclude=[ids[-1]])
        assert hits[0].product_id == ids[5]  # by the channel lists
    finally:
        store.close()
    if kind == "edge":
        with open_store(tmp_path / "store") as reopened:
            assert not reopened.has_fused()


@pytest.mark.parametrize(
    ("options", "described"),
    [
        (CollectionOptions(fused_vector=False), "no fused vector"),
        (CollectionOptions(quantization="int8"), "no fused vector"),
        (CollectionOptions(), None),
    ],
)
def test_options_decide_whether_a_new_collection_has_it(
    options, described, products, tmp_path
) -> None:
    with open_store(tmp_path / "store", options=options) as store:
        store.ensure_collection(ENCODER)
        store.upsert(_records(products, range(20)))
        assert store.has_fused() is (described is None)
        assert (described in options.describe()) if described else True
    with open_store(tmp_path / "store") as reopened:
        assert reopened.has_fused() is (described is None)
        if described is None:
            assert "fused vector" not in options.describe()


def test_a_copy_writes_the_fused_vector_with_the_source_hubness(store, products, tmp_path) -> None:
    """A copy (even from a store without the fused vector) builds the target's fused
    vectors from the channels and the hubness values in the payloads."""
    with open_store(tmp_path / "target") as target:
        report = copy_store(store, target, progress=False, snapshot=False)
        assert report.complete and report.copied == N
        assert target.has_fused()
        assert _last_coordinates(target) == pytest.approx(_last_coordinates(store), abs=1e-6)


def test_stored_fused_and_fused_query_layout() -> None:
    t, i = np.array([3.0, 4.0]), np.array([0.0, 2.0])
    np.testing.assert_allclose(stored_fused(t, i, 0.25), [0.6, 0.8, 0.0, 1.0, 0.25])
    np.testing.assert_allclose(
        fused_query(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.4, 0.6, 0.5),
        [0.4, 0.0, 0.0, 0.6, -0.3],
    )
    assert fused_dim(824) == 1649
