"""Fusion of the channels (``text`` and ``image`` vector scores, and the ``lexical`` BM25 score)
into one ranking.

Pure functions over candidate lists, no I/O, so that they can be checked against a
brute-force reference:

- ``weighted``: ``w_text * text_score + w_image * image_score + w_lexical * lexical_score``
  on the true cosine scores and the normalised BM25 (``bm25 / Σ idf·(k1+1)``, in [0, 1),
  :func:`clipy_qdrant.lexical.normalise_bm25`). The caller supplies every component score
  for every candidate (the query layer scores a product found by only some channels on the
  others with engine queries restricted to such products).
- ``rrf``: weighted reciprocal-rank fusion with Qdrant's formula
  ``sum_i 1 / ((rank_i + 1) / w_i + k - 1)`` (rank 0-based; with ``w_i = 1`` this is
  ``1 / (rank_i + k)``), over each channel's scored candidate list. Products whose scores in
  a list are equal (within :data:`RRF_TIE_TOLERANCE`) share the mean of the contributions of
  the positions they occupy, so products with the same vector (many catalog products share a
  name, hence a text vector; BM25 ties likewise) get the same contribution whatever order the
  engine returned them in, and the list's total contribution is unchanged. Without ties this
  is exactly Qdrant's RRF (which ranks by position, so tied products get different
  contributions).
- ``dbsf``: distribution-based score fusion as in Qdrant: each list's scores are mapped
  through ``(s - (mean - 3 std)) / (6 std)`` (sample std; a list of one, or with zero
  variance, maps to 0.5), then summed with weights ``w_i`` (with weights 1 and 1 this is
  exactly Qdrant's DBSF).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Literal

from clipy_qdrant.errors import ConfigError

FusionMethod = Literal["weighted", "rrf", "dbsf"]
FUSION_METHODS: tuple[FusionMethod, ...] = ("weighted", "rrf", "dbsf")

#: The lexical weight of a config that names none (the default config, and
#: :meth:`FusionConfig.from_weights`), beside text and image at 0.5 each: chosen on
#: validation-fold queries (docs/experiments.md, "Lexical channel in search"). A query
#: without words, or a store without the lexical channel, does not use it.
DEFAULT_W_LEXICAL = 0.5


@dataclass(frozen=True)
class FusionConfig:
    """How to fuse the channels. Weights are finite and non-negative; ``w_text`` or
    ``w_image`` is positive. ``w_lexical`` weighs the lexical (BM25) channel, which a query
    without words, or a store without the channel, does not have (its weight is then unused).

    Build a config from user input with ``from_weights``, which fills in missing weights.
    """

    method: FusionMethod = "weighted"
    w_text: float = 0.5
    w_image: float = 0.5
    rrf_k: int = 60
    w_lexical: float = DEFAULT_W_LEXICAL

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ConfigError(
                f"unknown fusion method {self.method!r}; use one of {', '.join(FUSION_METHODS)}"
            )
        if not (math.isfinite(self.w_text) and math.isfinite(self.w_image)):
            raise ConfigError(
                f"fusion weights must be finite numbers (got w_text={self.w_text}, "
                f"w_image={self.w_image})"
            )
        if self.w_text < 0 or self.w_image < 0:
            raise ConfigError(
                f"fusion weights must be >= 0 (got w_text={self.w_text}, w_image={self.w_image})"
            )
        if not math.isfinite(self.w_lexical) or self.w_lexical < 0:
            raise ConfigError(f"w_lexical must be a finite number >= 0 (got {self.w_lexical})")
        if self.w_text == 0 and self.w_image == 0:
            raise ConfigError("at least one of w_text and w_image must be > 0")
        if self.rrf_k < 1:
            raise ConfigError(f"rrf_k must be >= 1 (got {self.rrf_k})")

    @classmethod
    def from_weights(
        cls,
        method: str = "weighted",
        w_text: float | None = None,
        w_image: float | None = None,
        rrf_k: int = 60,
        w_lexical: float | None = None,
    ) -> FusionConfig:
        """The config for user-given weights, any of which may be missing.

        ``w_text`` / ``w_image``: neither given: 0.5 each. One given: it must be within [0, 1]
        and the other is ``1 -`` it. Both given: any finite non-negative pair, not both 0.
        ``w_lexical`` is added on top (it does not enter ``1 -``); missing, it is
        :data:`DEFAULT_W_LEXICAL`.
        """
        for name, weight in (("w_text", w_text), ("w_image", w_image), ("w_lexical", w_lexical)):
            if weight is not None and (
                isinstance(weight, bool) or not isinstance(weight, int | float)
            ):
                raise ConfigError(f"{name} must be a number (got {weight!r})")
        if w_text is None and w_image is None:
            w_text = w_image = 0.5
        elif w_text is None:
            w_text = round(1.0 - _alone("w_image", w_image, "w_text"), 10)
        elif w_image is None:
            w_image = round(1.0 - _alone("w_text", w_text, "w_image"), 10)
        assert w_text is not None and w_image is not None
        return cls(
            method=method,  # type: ignore[arg-type]  # __post_init__ names an unknown method
            w_text=float(w_text),
            w_image=float(w_image),
            rrf_k=rrf_k,
            w_lexical=float(DEFAULT_W_LEXICAL if w_lexical is None else w_lexical),
        )

    @property
    def label(self) -> str:
        base = f"{self.method} w_text={self.w_text:g} w_image={self.w_image:g}"
        if self.w_lexical > 0:
            base += f" w_lexical={self.w_lexical:g}"
        return f"{base} k={self.rrf_k}" if self.method == "rrf" else base


def _alone(name: str, weight: float | None, other: str) -> float:
    """A weight given without the other, which is ``1 -`` it: it must lie within [0, 1]."""
    assert weight is not None
    if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
        raise ConfigError(
            f"{name} given alone must be within [0, 1], as {other} is 1 - {name} "
            f"(got {weight}); give both weights to set them freely"
        )
    return weight


def weighted_scores(
    text_scores: Mapping[str, float],
    image_scores: Mapping[str, float],
    w_text: float,
    w_image: float,
    lexical_scores: Mapping[str, float] | None = None,
    w_lexical: float = 0.0,
) -> dict[str, float]:
    """``w_text * text + w_image * image (+ w_lexical * lexical)`` for every id; the mappings
    must cover the same ids (``lexical_scores`` only when ``w_lexical`` is used)."""
    lexical = lexical_scores if lexical_scores is not None and w_lexical else None
    for other in (image_scores, lexical):
        if other is not None and text_scores.keys() != other.keys():
            missing = set(text_scores) ^ set(other)
            raise ValueError(
                "weighted fusion needs both scores (and the lexical one when it is weighed) "
                f"for every candidate; missing for {sorted(missing)[:5]}"
            )
    if lexical is None:
        return {pid: w_text * text_scores[pid] + w_image * image_scores[pid] for pid in text_scores}
    return {
        pid: w_text * text_scores[pid] + w_image * image_scores[pid] + w_lexical * lexical[pid]
        for pid in text_scores
    }


#: Two scores of one list closer than this are a tie for :func:`rrf_scores`: the same
#: vector scored by float32 kernels that sum in different orders (a BLAS tail block, a SIMD
#: remainder) differs in the last bits, far below any real score gap of cosine or BM25.
RRF_TIE_TOLERANCE = 1e-6


def tie_groups(scores: Sequence[float]) -> list[tuple[int, int]]:
    """The ``[start, end)`` position ranges of equal scores in scores sorted best first: an
    entry within :data:`RRF_TIE_TOLERANCE` of its group's first (best) score joins it.

    >>> tie_groups([0.9, 0.8, 0.8, 0.7])
    [(0, 1), (1, 3), (3, 4)]
    """
    groups: list[tuple[int, int]] = []
    head, best = 0, scores[0] if scores else 0.0
    for pos, score in enumerate(scores):
        if best - score > RRF_TIE_TOLERANCE:
            groups.append((head, pos))
            head, best = pos, score
    if scores:
        groups.append((head, len(scores)))
    return groups


def _rrf_share(start: int, end: int, weight: float, k: int) -> float:
    """The mean of Qdrant's RRF contributions ``1 / ((rank + 1) / weight + k - 1)`` over
    the 0-based ranks ``start .. end - 1``."""
    if end == start + 1:
        return 1.0 / ((start + 1.0) / weight + k - 1.0)
    total = sum(1.0 / ((rank + 1.0) / weight + k - 1.0) for rank in range(start, end))
    return total / (end - start)


def rrf_scores(
    scored_lists: Sequence[Sequence[tuple[str, float]]], weights: Sequence[float], k: int
) -> dict[str, float]:
    """Weighted reciprocal-rank fusion over ``[(id, score), ...]`` lists (ranked by score,
    best first). Entries with equal scores (:func:`tie_groups`) share the mean of their
    positions' contributions, so the result does not depend on the order of tied entries
    and each list contributes the same total as without the tie."""
    if len(scored_lists) != len(weights):
        raise ValueError("one weight per ranked list")
    if k < 1:
        raise ValueError("rrf k must be >= 1")
    fused: dict[str, float] = {}
    for scored, weight in zip(scored_lists, weights, strict=True):
        if weight <= 0:
            continue
        # Stable (equal scores keep their order), and linear on a list already sorted.
        ordered = sorted(scored, key=itemgetter(1), reverse=True)
        scores = [score for _, score in ordered]
        for start, end in tie_groups(scores):
            share = _rrf_share(start, end, weight, k)
            for pid, _ in ordered[start:end]:
                fused[pid] = fused.get(pid, 0.0) + share
    return fused


def dbsf_normalize(scores: Sequence[float]) -> list[float]:
    """Qdrant's DBSF normalisation of one list of scores (mean ± 3 sample std → [0, 1])."""
    n = len(scores)
    if n == 0:
        return []
    if n == 1:
        return [0.5]
    mean = sum(scores) / n
    variance = sum((s - mean) ** 2 for s in scores) / (n - 1)
    if variance == 0:
        return [0.5] * n
    std = variance**0.5
    low = mean - 3 * std
    return [(s - low) / (6 * std) for s in scores]


def dbsf_scores(
    scored_lists: Sequence[Sequence[tuple[str, float]]], weights: Sequence[float]
) -> dict[str, float]:
    """Distribution-based score fusion over ``[(id, score), ...]`` lists, weighted."""
    if len(scored_lists) != len(weights):
        raise ValueError("one weight per scored list")
    fused: dict[str, float] = {}
    for scored, weight in zip(scored_lists, weights, strict=True):
        if weight <= 0 or not scored:
            continue
        normalized = dbsf_normalize([s for _, s in scored])
        for (pid, _), value in zip(scored, normalized, strict=True):
            fused[pid] = fused.get(pid, 0.0) + weight * value
    return fused


def top_k(fused: Mapping[str, float], k: int) -> list[tuple[str, float]]:
    """Best ``k`` by score, ties broken by id so the order is deterministic."""
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
