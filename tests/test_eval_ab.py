"""Paired A/B statistics: worked examples and the acceptance cases."""

from __future__ import annotations

import numpy as np
import pytest

from clipy_qdrant.errors import InputError
from clipy_qdrant.eval.ab import ab_compare, ab_test, bootstrap_ci, sign_flip_p_value


def test_b_better_on_every_query_is_significant() -> None:
    rng = np.random.default_rng(7)
    a = rng.uniform(0.0, 0.7, size=60)
    b = a + rng.uniform(0.01, 0.2, size=60)
    r = ab_test(a, b, n_resamples=2000)
    assert r.diff > 0
    assert r.diff == pytest.approx(float(np.mean(b - a)))
    assert 0 < r.ci_low <= r.diff <= r.ci_high
    assert r.significant
    assert r.p_value < 0.05
    assert r.p_value == pytest.approx(1 / 2001)  # no sign assignment reaches the observed mean
    assert (r.wins, r.losses, r.ties) == (60, 0, 0)
    assert r.mean_a == pytest.approx(a.mean()) and r.mean_b == pytest.approx(b.mean())


def test_identical_configs_give_zero_and_p_one() -> None:
    a = np.random.default_rng(1).uniform(size=50)
    r = ab_test(a, a.copy(), n_resamples=500)
    assert r.diff == 0.0
    assert r.p_value == 1.0
    assert (r.ci_low, r.ci_high) == (0.0, 0.0)
    assert not r.significant
    assert (r.wins, r.losses, r.ties) == (0, 0, 50)
    # Small n takes the exact path: also p = 1.
    assert ab_test([0.2, 0.4], [0.2, 0.4]).p_value == 1.0


def test_b_worse_gives_negative_difference() -> None:
    a = np.linspace(0.3, 0.9, 40)
    r = ab_test(a, a - 0.1, n_resamples=1000)
    assert r.diff == pytest.approx(-0.1)
    assert r.ci_high < 0 and r.significant
    assert (r.wins, r.losses) == (0, 40)


def test_exact_sign_flip_worked_examples() -> None:
    # diffs (1, 1, 1): of the 8 sign assignments only +++ and --- reach |mean| = 1.
    assert sign_flip_p_value(np.array([1.0, 1.0, 1.0])) == pytest.approx(2 / 8)
    # diffs (1, 2, -1), observed sum 2; sums of the 8 assignments: 2, 4, -2, 0, 0, 2, -4, -2,
    # six of which have |sum| >= 2.
    assert sign_flip_p_value(np.array([1.0, 2.0, -1.0])) == pytest.approx(6 / 8)
    r = ab_test([0, 0, 1], [1, 2, 0])
    assert r.diff == pytest.approx(2 / 3)
    assert r.p_value == pytest.approx(6 / 8)
    assert (r.wins, r.losses, r.ties) == (2, 1, 0)


def test_bootstrap_of_constant_difference_is_that_constant() -> None:
    assert bootstrap_ci(np.full(10, 0.25), n_resamples=100) == pytest.approx((0.25, 0.25))
    # Two values: the resampled means lie between them.
    low, high = bootstrap_ci(np.array([0.0, 1.0] * 10), n_resamples=2000, seed=3)
    assert 0.0 <= low < 0.5 < high <= 1.0


def test_seeded_and_reproducible() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=30), rng.uniform(size=30)
    assert ab_test(a, b, seed=5, n_resamples=500) == ab_test(a, b, seed=5, n_resamples=500)


def test_bad_inputs() -> None:
    with pytest.raises(InputError):
        ab_test([1.0, 2.0], [1.0])
    with pytest.raises(InputError):
        ab_test([], [])
    with pytest.raises(InputError):
        ab_test([float("nan")], [1.0])


def test_ab_compare_matches_queries_by_id_and_puts_primary_first() -> None:
    per_a = {"q1": {"mrr@10": 0.5, "ndcg@10": 0.4}, "q2": {"mrr@10": 1.0, "ndcg@10": 1.0}}
    per_b = {"q2": {"mrr@10": 1.0, "ndcg@10": 1.0}, "q1": {"mrr@10": 1.0, "ndcg@10": 0.6}}
    report = ab_compare(per_a, per_b, label_a="w_image=0.5", label_b="w_image=0.8")
    assert list(report.results) == ["ndcg@10", "mrr@10"]
    assert report.primary is not None
    assert report.primary.diff == pytest.approx(0.1)
    assert (report.primary.wins, report.primary.ties) == (1, 1)
    as_dict = report.to_dict()
    assert as_dict["metrics"]["mrr@10"]["diff"] == pytest.approx(0.25)
    assert as_dict["primary_metric"] == "ndcg@10"
    with pytest.raises(InputError, match="different queries"):
        ab_compare(per_a, {"q1": per_b["q1"]})
