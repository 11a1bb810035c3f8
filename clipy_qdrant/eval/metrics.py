"""Ranking metrics for retrieval evaluation: pure functions, no I/O.

Every metric takes ``ranked`` (result ids, best first), ``relevant`` (the set of ids that
count as correct) and a cutoff ``k`` and returns a float in ``[0, 1]``. Conventions:

- Only the first ``k`` results count. A result id that repeats is counted once, at its
  first position (later copies are ignored, as if they were not relevant).
- **Fewer than k results** is not rewarded: ``precision@k`` still divides by ``k``, and
  the ideal ranking of ``ndcg@k`` is the one with ``min(k, |relevant|)`` relevant results.
- ``recall@k`` divides by ``|relevant|``; ``map@k`` divides the sum of precisions at the
  relevant positions by ``min(k, |relevant|)`` (so a perfect top-k scores 1 even when more
  than ``k`` products are relevant), as in sentence-transformers' retrieval evaluator.
- ``ndcg@k`` uses binary gains: ``sum 1/log2(rank + 1)`` over relevant ranks (1-based)
  divided by the same sum for the ideal ranking.
- ``mrr@k`` is ``1/rank`` of the first relevant result within the top ``k``, else 0;
  ``hit_rate@k`` is 1 if any of the top ``k`` is relevant, else 0.
- **Empty relevant set**: every metric is 0.0 (nothing can be found).
  :func:`evaluate_rankings` refuses such queries instead of averaging those zeros in.
- **Ties**: the metrics see a ranking, not scores. :func:`pessimistic_order` turns scored
  results into the ranking in which, within a group of equal scores (or equal component
  scores), relevant ids come last, so that a tie is never counted as a win.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from clipy_qdrant.errors import InputError

#: The metric named first in every report.
PRIMARY_METRIC = "ndcg@10"

#: Metric names, in report order, without the ``@k`` suffix.
METRIC_NAMES: tuple[str, ...] = ("ndcg", "mrr", "map", "precision", "recall", "hit_rate")

DEFAULT_KS: tuple[int, ...] = (1, 10)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")


def _relevant_ranks(ranked: Sequence[str], relevant: Collection[str], k: int) -> list[int]:
    """1-based ranks within the top ``k`` of first occurrences of relevant ids."""
    _check_k(k)
    seen: set[str] = set()
    ranks: list[int] = []
    for rank, pid in enumerate(ranked[:k], start=1):
        if pid in seen:
            continue
        seen.add(pid)
        if pid in relevant:
            ranks.append(rank)
    return ranks


def precision_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant results among the top ``k``, divided by ``k`` (even if fewer were returned)."""
    return len(_relevant_ranks(ranked, relevant, k)) / k


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant results among the top ``k``, divided by the number of relevant ids."""
    if not relevant:
        _check_k(k)
        return 0.0
    return len(_relevant_ranks(ranked, relevant, k)) / len(relevant)


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Normalised discounted cumulative gain with binary gains."""
    ranks = _relevant_ranks(ranked, relevant, k)
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 1) for rank in ranks)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal


def mrr_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Reciprocal rank of the first relevant result within the top ``k`` (0 if none)."""
    ranks = _relevant_ranks(ranked, relevant, k)
    return 1.0 / ranks[0] if ranks else 0.0


def average_precision_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Sum of precision@rank over relevant ranks in the top ``k``, / ``min(k, |relevant|)``."""
    ranks = _relevant_ranks(ranked, relevant, k)
    if not relevant:
        return 0.0
    total = sum(hits / rank for hits, rank in enumerate(ranks, start=1))
    return total / min(k, len(relevant))


def hit_rate(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1.0 if any of the top ``k`` results is relevant, else 0.0."""
    return 1.0 if _relevant_ranks(ranked, relevant, k) else 0.0


MetricFn = Callable[[Sequence[str], Collection[str], int], float]

METRIC_FUNCTIONS: dict[str, MetricFn] = {
    "ndcg": ndcg_at_k,
    "mrr": mrr_at_k,
    "map": average_precision_at_k,
    "precision": precision_at_k,
    "recall": recall_at_k,
    "hit_rate": hit_rate,
}


def metric_names(ks: Iterable[int] = DEFAULT_KS) -> list[str]:
    """``["ndcg@1", "mrr@1", …, "ndcg@10", …]``: every metric at every ``k`` (sorted ks)."""
    return [f"{name}@{k}" for k in sorted(set(ks)) for name in METRIC_NAMES]


def score_query(
    ranked: Sequence[str], relevant: Collection[str], ks: Iterable[int] = DEFAULT_KS
) -> dict[str, float]:
    """Every metric at every ``k`` for one query: ``{"ndcg@10": .., "recall@1": .., …}``."""
    out: dict[str, float] = {}
    for k in sorted(set(ks)):
        for name in METRIC_NAMES:
            out[f"{name}@{k}"] = METRIC_FUNCTIONS[name](ranked, relevant, k)
    return out


def evaluate_per_query(
    rankings: Mapping[str, Sequence[str]],
    relevant: Mapping[str, Collection[str]],
    ks: Iterable[int] = DEFAULT_KS,
) -> dict[str, dict[str, float]]:
    """``{qid: {metric: value}}`` for every qid of ``relevant``.

    A qid absent from ``rankings`` scores as an empty ranking (all zeros). A qid whose
    relevant set is empty is an error: it cannot be scored fairly.
    """
    ks = sorted(set(ks))
    out: dict[str, dict[str, float]] = {}
    for qid, rel in relevant.items():
        if not rel:
            raise InputError(
                f"query {qid!r} has no relevant products; drop it or fix its relevance"
            )
        out[qid] = score_query(rankings.get(qid, ()), rel, ks)
    return out


def mean_scores(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over queries (``{}`` for no queries)."""
    if not per_query:
        return {}
    names = next(iter(per_query.values())).keys()
    n = len(per_query)
    return {name: sum(scores[name] for scores in per_query.values()) / n for name in names}


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]],
    relevant: Mapping[str, Collection[str]],
    ks: Iterable[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Mean of every metric over the queries of ``relevant``: ``{"ndcg@10": 0.71, …}``."""
    return mean_scores(evaluate_per_query(rankings, relevant, ks))


def pessimistic_order(
    ranked: Sequence[str],
    scores: Sequence[float],
    relevant: Collection[str],
    tol: float = 1e-6,
    *,
    components: Sequence[Sequence[float]] | None = None,
) -> list[str]:
    """Reorder scored results (best first) so that within each run of tied results,
    non-relevant ids come before relevant ones: a tie is never counted as a win.

    A result ties with the first result of the current run when its score is within
    ``tol`` of that result's score, or, when ``components`` are given (e.g. each result's
    (text_score, image_score)), when every component is within ``tol``: two products with
    the same evidence are tied even if a rank-based fusion gave them different scores.
    """
    if len(ranked) != len(scores):
        raise ValueError(f"{len(ranked)} ids but {len(scores)} scores")
    if components is not None and len(components) != len(ranked):
        raise ValueError(f"{len(ranked)} ids but {len(components)} component rows")

    def tied(i: int, j: int) -> bool:
        if abs(scores[j] - scores[i]) <= tol:
            return True
        if components is None:
            return False
        return all(abs(a - b) <= tol for a, b in zip(components[i], components[j], strict=True))

    out: list[str] = []
    i = 0
    while i < len(ranked):
        j = i + 1
        while j < len(ranked) and tied(i, j):
            j += 1
        group = ranked[i:j]
        out.extend(pid for pid in group if pid not in relevant)
        out.extend(pid for pid in group if pid in relevant)
        i = j
    return out


__all__ = [
    "DEFAULT_KS",
    "METRIC_FUNCTIONS",
    "METRIC_NAMES",
    "PRIMARY_METRIC",
    "average_precision_at_k",
    "evaluate_per_query",
    "evaluate_rankings",
    "hit_rate",
    "mean_scores",
    "metric_names",
    "mrr_at_k",
    "ndcg_at_k",
    "pessimistic_order",
    "precision_at_k",
    "recall_at_k",
    "score_query",
]
