"""The lexical channel's pure parts: tokens, term ids, BM25 weights and their normalisation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from clipy_qdrant.errors import ConfigError
from clipy_qdrant.lexical import (
    Bm25Params,
    Bm25Reference,
    LexicalQuery,
    document_vector,
    idf,
    max_bm25,
    normalise_bm25,
    query_terms,
    query_vector,
    term_id,
    tokenize,
)


def test_tokenize_folds_case_and_accents_and_keeps_codes_whole() -> None:
    assert tokenize("Fossil Women CH2586 Watch") == ["fossil", "women", "ch2586", "watch"]
    assert tokenize("Men's T-Shirts, 3XL") == ["men", "s", "t", "shirts", "3xl"]
    assert tokenize("Café  CRÈME_brûlée") == ["cafe", "creme", "brulee"]
    assert tokenize("ＣＨ２５８６") == ["ch2586"]  # full-width forms fold to ASCII
    assert tokenize(" ,- ") == []


def test_term_ids_are_stable_uint32() -> None:
    assert term_id("ch2586") == term_id("ch2586")
    assert term_id("red") != term_id("blue")
    # Fixed values: the ids are stored in collections, so they must never change.
    assert term_id("red") == int.from_bytes(
        hashlib.blake2b(b"red", digest_size=4).digest(), "little"
    )
    assert all(0 <= term_id(w) < 2**32 for w in ("a", "sneakers", "ch2586", "é"))


def test_document_vector_holds_bm25_term_frequency_weights() -> None:
    params = Bm25Params(avg_len=4.0)
    doc = document_vector("Red red shoes", params)  # 3 tokens
    weights = doc.as_dict()
    norm = 1.2 * (1 - 0.75 + 0.75 * 3 / 4.0)
    assert weights[term_id("red")] == pytest.approx(2 * 2.2 / (2 + norm))
    assert weights[term_id("shoes")] == pytest.approx(1 * 2.2 / (1 + norm))
    assert list(doc.indices) == sorted(doc.indices)


def test_query_vector_weighs_each_distinct_term_once() -> None:
    q = query_vector("red RED shoes")
    assert q.as_dict() == {term_id("red"): 1.0, term_id("shoes"): 1.0}
    assert query_terms("red RED shoes") == ["red", "shoes"]
    assert len(query_vector("!!")) == 0


def test_params_are_checked() -> None:
    with pytest.raises(ConfigError, match="avg_len"):
        Bm25Params(avg_len=0)
    with pytest.raises(ConfigError, match="b must"):
        Bm25Params(avg_len=1, b=1.5)
    with pytest.raises(ConfigError, match="k1"):
        Bm25Params(avg_len=1, k1=-1)
    assert Bm25Params.for_texts(["a b", "c d e f"]).avg_len == 3.0
    assert Bm25Params.for_texts([]).avg_len == 1.0
    params = Bm25Params(avg_len=11.3, k1=1.5, b=0.5)
    assert Bm25Params.from_json(params.to_json()) == params
    with pytest.raises(ConfigError, match="malformed BM25"):
        Bm25Params.from_json({"avg_len": 3})


def test_normalised_scores_stay_below_one_and_reach_zero() -> None:
    texts = ["red shoes", "red red red red red red", "blue jeans", "red", "shoes shoes"]
    ref = Bm25Reference(texts, Bm25Params.for_texts(texts))
    for query in ("red shoes", "red", "jeans", "red jeans shoes"):
        idfs = [ref.idf(t) for t in query_terms(query)]
        normalised = normalise_bm25(ref.scores(query), idfs)
        assert normalised.max() < 1.0 and normalised.min() >= 0.0
        # The ordering within the channel is kept.
        assert np.array_equal(
            np.argsort(-normalised, kind="stable"), np.argsort(-ref.scores(query), kind="stable")
        )
    # A text holding every query term many times approaches the bound.
    long_tf = Bm25Reference(["red " * 1000, "blue"], Bm25Params(avg_len=1000.0))
    near = normalise_bm25(long_tf.scores("red"), [long_tf.idf("red")])
    assert 0.99 < near[0] < 1.0 and near[1] == 0.0
    assert normalise_bm25([1.0, 2.0], []).tolist() == [0.0, 0.0]
    assert max_bm25([1.0, 0.5], k1=1.2) == pytest.approx(1.5 * 2.2)


def test_idf_matches_qdrant_formula() -> None:
    assert idf(1, 10) == pytest.approx(np.log((10 - 1 + 0.5) / 1.5 + 1))
    assert idf(10, 10) > 0  # a word in every text still weighs a little
    assert idf(0, 10) > idf(1, 10)


def test_lexical_query_scores_stored_vectors_like_the_reference() -> None:
    texts = ["Puma Men Red Sneakers", "Nike Red Red Shoes", "Fossil Watch CH2586", "blue jeans"]
    params = Bm25Params.for_texts(texts)
    ref = Bm25Reference(texts, params)
    for text in ("red sneakers", "CH2586 watch", "green", ""):
        query = LexicalQuery.build(text, ref.document_frequency, ref.documents)
        got = [query.score(document_vector(t, params)) for t in texts]
        np.testing.assert_allclose(got, ref.scores(text), rtol=1e-12)
        idfs = [ref.idf(t) for t in query_terms(text)]
        assert query.bound == pytest.approx(max_bm25(idfs))
        np.testing.assert_allclose(
            [query.normalise(g) for g in got], normalise_bm25(ref.scores(text), idfs)
        )
    assert LexicalQuery.build("", ref.document_frequency, ref.documents).normalise(3.0) == 0.0
