"""The HNSW beam each search walks: the store's ``hnsw_ef`` for weighted fusion's lists (and
its deeper rounds; the fused vector's list twice it under a filter), twice that for the
lists RRF and DBSF read whole; on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fake_encoder import FakeEncoder
from serve_store import build_store

from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.retrieval import FUSED_WIDE_BEAM, RANK_FUSION_BEAM
from clipy_qdrant.search import QueryVectors, Searcher
from clipy_qdrant.store import VectorStore
from clipy_qdrant.store.engine import EngineSearch
from clipy_qdrant.store.fused import FUSED


@pytest.fixture(scope="module", params=["edge", "memory"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    built = build_store(30, tmp_path_factory.mktemp("beam") / "store", backend=request.param)
    try:
        yield built
    finally:
        built.close()


def beams(store: Any, run: Any) -> list[tuple[str, bool, int]]:
    """(vector, exact, beam) of every engine search ``run`` makes on ``store``."""
    seen: list[EngineSearch] = []
    engine_search = store._search

    def recording(search: EngineSearch) -> Any:
        seen.append(search)
        return engine_search(search)

    store._search = recording
    try:
        run()
    finally:
        del store._search
    return [(s.using, s.exact, s.ef) for s in seen]


@pytest.mark.parametrize("ef", [32, 128])
def test_weighted_lists_walk_the_store_beam_and_rank_fusion_twice_it(
    store: VectorStore, ef: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "hnsw_ef", ef)
    searcher = Searcher(store, FakeEncoder())
    query = searcher.embed("red shirt")
    weighted = beams(store, lambda: searcher.search_vectors(query, k=5))
    lists = [b for b in weighted if not b[1]]  # the graph walks, not the exact fills
    assert lists == [(FUSED, False, ef)]  # one list: the fused vector's
    filtered = beams(store, lambda: searcher.search_vectors(query, k=5, filters=["year>=0"]))
    assert [b for b in filtered if not b[1]] == [(FUSED, False, FUSED_WIDE_BEAM * ef)]
    other = searcher.embed("blue jeans").text  # a text+image query: halves of two things
    both = QueryVectors(text=query.text, image=other)
    two = beams(store, lambda: searcher.search_vectors(both, k=5))
    assert [b for b in two if not b[1]] == [(FUSED, False, FUSED_WIDE_BEAM * ef)]
    monkeypatch.setattr(store, "has_fused", lambda: False)  # a store without it
    channels = [b for b in beams(store, lambda: searcher.search_vectors(query, k=5)) if not b[1]]
    assert {using for using, _, _ in channels} == {"text", "image"}
    assert all(beam == ef for _, _, beam in channels)
    for method in ("rrf", "dbsf"):
        fused = beams(
            store, lambda m=method: searcher.search_vectors(query, k=5, fusion=FusionConfig(m))
        )
        walks = [b for b in fused if not b[1]]
        assert walks and all(beam == RANK_FUSION_BEAM * ef for _, _, beam in walks)


def test_a_search_names_its_own_beam(store: VectorStore) -> None:
    vector = Searcher(store, FakeEncoder()).embed("red shirt").text
    walks = beams(store, lambda: store.search("text", vector, 3, ef=77))
    assert walks == [("text", False, 77)]
    assert beams(store, lambda: store.search("text", vector, 3)) == [("text", False, store.hnsw_ef)]
