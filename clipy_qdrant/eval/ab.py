"""Paired comparison of two settings over the same queries: pure numpy, seeded.

For per-query scores ``a`` and ``b`` of one metric (same queries, same order), the
difference is ``mean(b) - mean(a)`` (positive: B is better) with

- a **paired bootstrap** confidence interval: resample queries with replacement, take the
  mean difference, report the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
  percentiles;
- a **paired randomization test** (sign flip): under "A and B are exchangeable" each
  per-query difference keeps or flips its sign with probability 1/2; the two-sided p-value
  is the share of sign assignments whose mean difference is at least as far from 0 as the
  observed one. Exact (all ``2**n`` assignments) for ``n <= 12`` queries, otherwise
  ``n_resamples`` random ones counted as ``(hits + 1) / (n_resamples + 1)``. Identical
  scores give difference 0 and p = 1;
- wins / losses / ties: queries where B scores above / below / equal to A (within ``tol``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from clipy_qdrant.errors import InputError
from clipy_qdrant.eval.metrics import PRIMARY_METRIC

#: Up to this many queries the randomization test enumerates every sign assignment.
EXACT_MAX_N = 12
_CHUNK = 512


@dataclass(frozen=True)
class ABResult:
    """A against B on one metric over ``n`` paired queries."""

    metric: str
    n: int
    mean_a: float
    mean_b: float
    diff: float  # mean_b - mean_a
    ci_low: float
    ci_high: float
    p_value: float
    wins: int  # queries where B > A
    losses: int  # queries where B < A
    ties: int
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        """The confidence interval excludes 0."""
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


@dataclass(frozen=True)
class ABReport:
    """A against B on several metrics (one :class:`ABResult` per metric), primary first."""

    label_a: str
    label_b: str
    n_queries: int
    results: dict[str, ABResult]
    primary_metric: str = PRIMARY_METRIC
    seed: int = 0
    n_resamples: int = 10_000
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> ABResult | None:
        return self.results.get(self.primary_metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.label_a,
            "b": self.label_b,
            "n_queries": self.n_queries,
            "primary_metric": self.primary_metric,
            "seed": self.seed,
            "n_resamples": self.n_resamples,
            "metrics": {name: r.to_dict() for name, r in self.results.items()},
            **({"notes": self.notes} if self.notes else {}),
        }


def _as_pair(scores_a: Sequence[float], scores_b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(scores_a, dtype=np.float64).ravel()
    b = np.asarray(scores_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise InputError(f"A has {a.size} scores but B has {b.size}; an A/B test needs pairs")
    if a.size == 0:
        raise InputError("an A/B test needs at least one query")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("A/B scores must be finite numbers")
    return a, b


def bootstrap_ci(
    diffs: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs`` over query resamples (with replacement)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1) (got {confidence})")
    n = diffs.size
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        stop = min(start + _CHUNK, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diffs[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def sign_flip_p_value(diffs: np.ndarray, *, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of the paired randomization (sign-flip) test on the mean difference."""
    n = diffs.size
    observed = abs(diffs.mean())
    # Slack for float rounding: a reassignment equal to the observed one must count as a hit.
    slack = 1e-12 * max(1.0, float(np.abs(diffs).sum()))
    if n <= EXACT_MAX_N:
        codes = np.arange(2**n)[:, None]
        signs = 1.0 - 2.0 * ((codes >> np.arange(n)) & 1)
        perm = np.abs(signs @ diffs) / n
        return float(np.mean(perm >= observed - slack))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_resamples, _CHUNK):
        size = min(_CHUNK, n_resamples - start)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(size, n))
        hits += int(np.count_nonzero(np.abs(signs @ diffs) / n >= observed - slack))
    return (hits + 1) / (n_resamples + 1)


def ab_test(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    *,
    metric: str = PRIMARY_METRIC,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    tol: float = 1e-12,
) -> ABResult:
    """Compare paired per-query scores of one metric; ``diff = mean(b) - mean(a)``."""
    a, b = _as_pair(scores_a, scores_b)
    diffs = b - a
    if np.all(np.abs(diffs) <= tol):
        diffs = np.zeros_like(diffs)
    low, high = bootstrap_ci(diffs, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return ABResult(
        metric=metric,
        n=int(a.size),
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        diff=float(diffs.mean()),
        ci_low=low,
        ci_high=high,
        p_value=sign_flip_p_value(diffs, n_resamples=n_resamples, seed=seed),
        wins=int(np.count_nonzero(diffs > tol)),
        losses=int(np.count_nonzero(diffs < -tol)),
        ties=int(np.count_nonzero(np.abs(diffs) <= tol)),
        confidence=confidence,
    )


def ab_compare(
    per_query_a: Mapping[str, Mapping[str, float]],
    per_query_b: Mapping[str, Mapping[str, float]],
    *,
    label_a: str = "A",
    label_b: str = "B",
    metrics: Sequence[str] | None = None,
    primary_metric: str = PRIMARY_METRIC,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> ABReport:
    """A/B test on every metric of ``{qid: {metric: score}}`` pairs (queries matched by id)."""
    if per_query_a.keys() != per_query_b.keys():
        only = sorted(set(per_query_a) ^ set(per_query_b))
        raise InputError(f"A and B were scored on different queries (e.g. {only[:3]})")
    qids = sorted(per_query_a)
    if not qids:
        raise InputError("an A/B test needs at least one query")
    names = list(metrics) if metrics is not None else list(per_query_a[qids[0]])
    if primary_metric in names:
        names.remove(primary_metric)
        names.insert(0, primary_metric)
    results: dict[str, ABResult] = {}
    for name in names:
        try:
            a = [per_query_a[q][name] for q in qids]
            b = [per_query_b[q][name] for q in qids]
        except KeyError:
            raise InputError(f"metric {name!r} is missing from some query's scores") from None
        results[name] = ab_test(
            a, b, metric=name, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    return ABReport(
        label_a=label_a,
        label_b=label_b,
        n_queries=len(qids),
        results=results,
        primary_metric=primary_metric,
        seed=seed,
        n_resamples=n_resamples,
    )


__all__ = [
    "EXACT_MAX_N",
    "ABReport",
    "ABResult",
    "ab_compare",
    "ab_test",
    "bootstrap_ci",
    "sign_flip_p_value",
]
