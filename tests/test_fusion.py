"""Fusion functions: hand-computed cases and congruence with Qdrant's own implementation."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from qdrant_client.http import models
from qdrant_client.hybrid.fusion import distribution_based_score_fusion, reciprocal_rank_fusion

from clipy_qdrant.errors import ConfigError
from clipy_qdrant.fusion import (
    RRF_TIE_TOLERANCE,
    FusionConfig,
    dbsf_normalize,
    dbsf_scores,
    rrf_scores,
    tie_groups,
    top_k,
    weighted_scores,
)


def test_rrf_hand_computed() -> None:
    fused = rrf_scores([[("a", 0.9), ("b", 0.8), ("c", 0.7)], [("b", 0.5), ("d", 0.4)]], [1, 1], 60)
    assert fused["a"] == pytest.approx(1 / 60)
    assert fused["b"] == pytest.approx(1 / 61 + 1 / 60)
    assert fused["c"] == pytest.approx(1 / 62)
    assert fused["d"] == pytest.approx(1 / 61)
    assert [pid for pid, _ in top_k(fused, 2)] == ["b", "a"]


def test_rrf_zero_weight_list_is_ignored() -> None:
    fused = rrf_scores([[("a", 0.1)], [("b", 0.2)]], [1.0, 0.0], k=2)
    assert fused == {"a": pytest.approx(1 / 2)}


def test_dbsf_normalize_hand_computed() -> None:
    scores = [0.9, 0.5, 0.1]  # mean 0.5, sample std 0.4 -> low = -0.7, span 2.4
    assert dbsf_normalize(scores) == pytest.approx([1.6 / 2.4, 1.2 / 2.4, 0.8 / 2.4])
    assert dbsf_normalize([0.3]) == [0.5]
    assert dbsf_normalize([0.2, 0.2]) == [0.5, 0.5]
    assert dbsf_normalize([]) == []


def _points(ranked: list[tuple[str, float]]) -> list[models.ScoredPoint]:
    return [models.ScoredPoint(id=i, version=0, score=s) for i, s in ranked]


def _random_lists(rng: random.Random) -> list[list[tuple[str, float]]]:
    ids = [f"{n}" for n in range(40)]
    lists = []
    for _ in range(2):
        chosen = rng.sample(ids, rng.randint(1, 25))
        scores = sorted((rng.random() for _ in chosen), reverse=True)
        lists.append(list(zip(chosen, scores, strict=True)))
    return lists


@pytest.mark.parametrize("seed", range(20))
def test_rrf_equals_qdrant_weighted_rrf_without_ties(seed: int) -> None:
    rng = random.Random(seed)
    lists = _random_lists(rng)
    weights = [rng.choice([0.25, 0.5, 1.0, 2.0]), rng.choice([0.3, 1.0, 1.5])]
    k = rng.choice([2, 10, 60])
    ours = rrf_scores(lists, weights, k)
    theirs = reciprocal_rank_fusion(
        [_points(lst) for lst in lists], limit=1000, ranking_constant_k=k, weights=weights
    )
    assert {p.id: p.score for p in theirs} == pytest.approx(ours)


def test_rrf_tied_scores_share_their_positions_mean() -> None:
    # b and c tie over positions 1 and 2: each gets the mean of those two contributions.
    fused = rrf_scores([[("a", 0.9), ("b", 0.8), ("c", 0.8), ("d", 0.7)]], [2.0], k=60)
    contribution = [1 / ((rank + 1) / 2.0 + 59) for rank in range(4)]
    assert fused["a"] == pytest.approx(contribution[0])
    assert fused["b"] == fused["c"] == pytest.approx((contribution[1] + contribution[2]) / 2)
    assert fused["d"] == pytest.approx(contribution[3])
    assert sum(fused.values()) == pytest.approx(sum(contribution))
    assert tie_groups([0.9, 0.8, 0.8, 0.8, 0.7, 0.7]) == [(0, 1), (1, 4), (4, 6)]
    assert tie_groups([]) == []


def test_rrf_ties_within_tolerance_only() -> None:
    # Float32 kernels may differ in the last bits for one vector: still a tie.
    near = 0.5 - RRF_TIE_TOLERANCE / 4
    assert tie_groups([0.5, near, 0.5 - 10 * RRF_TIE_TOLERANCE]) == [(0, 2), (2, 3)]


_SCORES = st.sampled_from([0.9, 0.75, 0.5, 0.25, 0.1, -0.2])


@st.composite
def _tied_lists(draw: st.DrawFn) -> tuple[list[list[tuple[str, float]]], list[float], int]:
    """Two channels' lists over products of which many share a score (a duplicate vector)."""
    lists = []
    for _channel in range(2):
        ids = draw(st.lists(st.integers(0, 30), unique=True, max_size=25))
        scores = draw(st.lists(_SCORES, min_size=len(ids), max_size=len(ids)))
        ranked = sorted(zip((f"p{i}" for i in ids), scores, strict=True), key=lambda x: -x[1])
        lists.append(ranked)
    weights = [draw(st.sampled_from([0.0, 0.3, 1.0, 2.0])) for _ in lists]
    return lists, weights, draw(st.sampled_from([1, 2, 60]))


@given(_tied_lists(), st.randoms(use_true_random=False))
def test_rrf_tied_products_score_equal_in_any_tie_order(
    case: tuple[list[list[tuple[str, float]]], list[float], int], rng: random.Random
) -> None:
    lists, weights, k = case
    fused = rrf_scores(lists, weights, k)
    # Any engine's order of the tied entries (each list still sorted by score) fuses the same.
    shuffled = []
    for lst in lists:
        keyed = [(score, rng.random(), pid) for pid, score in lst]
        shuffled.append(
            [(pid, score) for score, _, pid in sorted(keyed, key=lambda x: (-x[0], x[1]))]
        )
    assert rrf_scores(shuffled, weights, k) == fused
    # Products with the same score in every list (the same vectors) get the same fused score.
    signature: dict[str, tuple[float | None, ...]] = {}
    for pid in fused:
        signature[pid] = tuple(dict(lst).get(pid) for lst in lists)
    for a in fused:
        for b in fused:
            if signature[a] == signature[b]:
                assert fused[a] == fused[b]


@pytest.mark.parametrize("seed", range(20))
def test_dbsf_equals_qdrant_dbsf_with_unit_weights(seed: int) -> None:
    lists = _random_lists(random.Random(seed))
    ours = dbsf_scores(lists, [1.0, 1.0])
    theirs = distribution_based_score_fusion([_points(lst) for lst in lists], limit=1000)
    assert {p.id: p.score for p in theirs} == pytest.approx(ours)


def test_weighted_scores_needs_both_components() -> None:
    assert weighted_scores({"a": 0.5}, {"a": 0.1}, 0.3, 0.7) == {"a": pytest.approx(0.22)}
    with pytest.raises(ValueError, match="both scores"):
        weighted_scores({"a": 0.5}, {"b": 0.1}, 0.5, 0.5)


def test_top_k_breaks_ties_by_id() -> None:
    assert top_k({"b": 1.0, "a": 1.0, "c": 2.0}, 2) == [("c", 2.0), ("a", 1.0)]


def test_fusion_config_validation() -> None:
    assert FusionConfig.from_weights(w_image=0.3).w_text == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="unknown fusion method"):
        FusionConfig(method="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=">= 0"):
        FusionConfig(w_text=-0.1)
    with pytest.raises(ConfigError, match="at least one"):
        FusionConfig(w_text=0, w_image=0)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        FusionConfig.from_weights(w_image=1.5)


@pytest.mark.parametrize(
    ("w_text", "w_image", "expected"),
    [
        (None, None, (0.5, 0.5)),
        (None, 0.8, (0.2, 0.8)),
        (0.3, None, (0.3, 0.7)),
        (None, 0.0, (1.0, 0.0)),
        (1.0, None, (1.0, 0.0)),
        (1, 2, (1.0, 2.0)),  # both given: any non-negative pair
        (0.0, 1.5, (0.0, 1.5)),
    ],
)
def test_from_weights_fills_in_the_missing_weight(
    w_text: float | None, w_image: float | None, expected: tuple[float, float]
) -> None:
    config = FusionConfig.from_weights("rrf", w_text=w_text, w_image=w_image, rrf_k=7)
    assert (config.method, config.w_text, config.w_image, config.rrf_k) == ("rrf", *expected, 7)


@pytest.mark.parametrize(
    ("w_text", "w_image", "message"),
    [
        (None, 1.5, r"w_image given alone must be within \[0, 1\]"),
        (None, -0.5, r"w_image given alone must be within \[0, 1\]"),
        (-1.0, None, r"w_text given alone must be within \[0, 1\]"),
        (float("nan"), None, r"w_text given alone must be within \[0, 1\]"),
        (float("inf"), 0.5, "finite"),
        (0.5, float("nan"), "finite"),
        (-1.0, 0.5, ">= 0"),
        (0.0, 0.0, "at least one"),
        ("0.5", None, "w_text must be a number"),
        (None, True, "w_image must be a number"),
    ],
)
def test_from_weights_rejects_bad_weights_in_one_line(
    w_text: object, w_image: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        FusionConfig.from_weights(w_text=w_text, w_image=w_image)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)


def test_direct_construction_rejects_non_finite_weights() -> None:
    with pytest.raises(ConfigError, match="finite"):
        FusionConfig(w_text=float("nan"))
