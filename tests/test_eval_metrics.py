"""Ranking metrics against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from clipy_qdrant.errors import InputError
from clipy_qdrant.eval.metrics import (
    PRIMARY_METRIC,
    average_precision_at_k,
    evaluate_per_query,
    evaluate_rankings,
    hit_rate,
    metric_names,
    mrr_at_k,
    ndcg_at_k,
    pessimistic_order,
    precision_at_k,
    recall_at_k,
    score_query,
)

# Relevant at ranks 2 and 4 of 5; a third relevant id ("x") is never returned.
RANKED = ["a", "b", "c", "d", "e"]
RELEVANT = {"b", "d", "x"}
INV_LOG2_3 = 1 / math.log2(3)  # discount at rank 2
INV_LOG2_5 = 1 / math.log2(5)  # discount at rank 4


def test_worked_example_at_5() -> None:
    assert precision_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 5)
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert mrr_at_k(RANKED, RELEVANT, 5) == pytest.approx(1 / 2)
    assert hit_rate(RANKED, RELEVANT, 5) == 1.0
    # AP: precision 1/2 at rank 2, 2/4 at rank 4, divided by min(5, 3 relevant) = 3.
    assert average_precision_at_k(RANKED, RELEVANT, 5) == pytest.approx((1 / 2 + 2 / 4) / 3)
    # Ideal ranking puts the 3 relevant at ranks 1, 2, 3: 1 + 1/log2(3) + 1/log2(4).
    ideal = 1 + INV_LOG2_3 + 1 / 2
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx((INV_LOG2_3 + INV_LOG2_5) / ideal)
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(0.498189, abs=1e-6)


def test_worked_example_at_3_cuts_off_rank_4() -> None:
    assert precision_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 2)
    assert average_precision_at_k(RANKED, RELEVANT, 3) == pytest.approx((1 / 2) / 3)
    assert ndcg_at_k(RANKED, RELEVANT, 3) == pytest.approx(INV_LOG2_3 / (1 + INV_LOG2_3 + 1 / 2))


def test_at_1() -> None:
    assert precision_at_k(RANKED, RELEVANT, 1) == 0.0
    assert mrr_at_k(RANKED, RELEVANT, 1) == 0.0
    assert hit_rate(RANKED, RELEVANT, 1) == 0.0
    assert ndcg_at_k(["b"], RELEVANT, 1) == 1.0
    assert average_precision_at_k(["b"], RELEVANT, 1) == 1.0


def test_fewer_than_k_results_are_not_rewarded() -> None:
    ranked = ["a", "b"]
    assert precision_at_k(ranked, {"b"}, 10) == pytest.approx(1 / 10)  # divides by k, not by 2
    assert recall_at_k(ranked, {"b"}, 10) == 1.0
    assert mrr_at_k(ranked, {"b"}, 10) == 0.5
    assert ndcg_at_k(ranked, {"b"}, 10) == pytest.approx(INV_LOG2_3)  # ideal: one hit at rank 1
    assert average_precision_at_k(ranked, {"b"}, 10) == pytest.approx(0.5)
    assert precision_at_k([], {"b"}, 10) == 0.0
    assert ndcg_at_k([], {"b"}, 10) == 0.0


def test_perfect_ranking_with_more_relevant_than_k() -> None:
    relevant = {str(i) for i in range(20)}
    ranked = [str(i) for i in range(10)]
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(1.0)
    assert average_precision_at_k(ranked, relevant, 10) == pytest.approx(1.0)
    assert precision_at_k(ranked, relevant, 10) == 1.0
    assert recall_at_k(ranked, relevant, 10) == pytest.approx(0.5)


def test_repeated_ids_count_once() -> None:
    ranked = ["b", "b", "c"]
    relevant = {"b", "c"}
    assert precision_at_k(ranked, relevant, 3) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, relevant, 3) == 1.0
    # Relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2.
    assert average_precision_at_k(ranked, relevant, 3) == pytest.approx((1 + 2 / 3) / 2)


def test_empty_relevant_set_scores_zero() -> None:
    for fn in (precision_at_k, recall_at_k, ndcg_at_k, mrr_at_k, average_precision_at_k, hit_rate):
        assert fn(RANKED, set(), 5) == 0.0


def test_bad_k() -> None:
    with pytest.raises(ValueError):
        precision_at_k(RANKED, RELEVANT, 0)
    with pytest.raises(ValueError):
        recall_at_k(RANKED, set(), 0)


def test_ties_are_not_wins() -> None:
    # The known item "q" shares its score with two namesakes: ranked after them.
    ranked = ["q", "n1", "n2", "z"]
    order = pessimistic_order(ranked, [0.9, 0.9, 0.9, 0.5], {"q"})
    assert order == ["n1", "n2", "q", "z"]
    assert mrr_at_k(order, {"q"}, 10) == pytest.approx(1 / 3)
    assert precision_at_k(order, {"q"}, 1) == 0.0
    # Distinct scores keep the order.
    assert pessimistic_order(ranked, [0.9, 0.8, 0.7, 0.5], {"q"}) == ranked
    # Two tie groups: (a, r1) and (r2, b); relevant last within each.
    assert pessimistic_order(["r1", "a", "r2", "b"], [1, 1, 0.5, 0.5], {"r1", "r2"}) == [
        "a",
        "r1",
        "b",
        "r2",
    ]
    with pytest.raises(ValueError):
        pessimistic_order(["a"], [1.0, 2.0], set())


def test_equal_component_scores_are_ties_even_when_fused_scores_differ() -> None:
    # Rank fusion gave "q" and "n1" different scores although both have text score 0.9:
    # with the components given they are tied, so "q" goes after "n1".
    ranked = ["q", "n1", "z"]
    fused = [0.0164, 0.0161, 0.0159]
    assert pessimistic_order(ranked, fused, {"q"}) == ranked
    components = [(0.9,), (0.9,), (0.7,)]
    assert pessimistic_order(ranked, fused, {"q"}, components=components) == ["n1", "q", "z"]
    # Two components: a tie needs both equal.
    two = [(0.9, 0.1), (0.9, 0.2), (0.7, 0.0)]
    assert pessimistic_order(ranked, fused, {"q"}, components=two) == ranked
    with pytest.raises(ValueError):
        pessimistic_order(ranked, fused, {"q"}, components=[(0.9,)])


def test_score_query_names() -> None:
    scores = score_query(RANKED, RELEVANT, ks=[10, 5])
    assert list(scores) == metric_names([5, 10])
    assert PRIMARY_METRIC in metric_names([1, 10])
    assert scores["precision@5"] == pytest.approx(0.4)
    assert scores["precision@10"] == pytest.approx(0.2)


def test_evaluate_rankings_averages_queries() -> None:
    rankings = {"q1": ["a", "b"], "q2": ["c", "d"]}
    relevant = {"q1": {"a"}, "q2": {"d"}, "q3": {"e"}}  # q3 was not run: all zeros
    per_query = evaluate_per_query(rankings, relevant, ks=[1, 10])
    assert per_query["q1"]["mrr@10"] == 1.0
    assert per_query["q2"]["mrr@10"] == 0.5
    assert per_query["q3"]["mrr@10"] == 0.0
    means = evaluate_rankings(rankings, relevant, ks=[1, 10])
    assert means["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert means["precision@1"] == pytest.approx(1 / 3)
    assert means["recall@10"] == pytest.approx(2 / 3)
    assert means["ndcg@10"] == pytest.approx((1 + INV_LOG2_3 + 0) / 3)
    assert evaluate_rankings({}, {}) == {}


def test_query_without_relevant_products_is_refused() -> None:
    with pytest.raises(InputError, match="q1"):
        evaluate_rankings({"q1": ["a"]}, {"q1": set()})
