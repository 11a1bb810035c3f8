"""Fusion of the two channels (``text`` and ``image`` vector scores) into one ranking.

Pure functions over candidate lists, no I/O, so that they can be checked against a
brute-force reference:

- ``weighted``: ``w_text * text_score + w_image * image_score`` on the true cosine scores.
  The caller supplies both component scores for every candidate (the query layer fills in
  the score of a product found by only one channel from its stored vector).
- ``rrf``: weighted reciprocal-rank fusion with Qdrant's formula
  ``sum_i 1 / ((rank_i + 1) / w_i + k - 1)`` (rank 0-based; with ``w_i = 1`` this is
  ``1 / (rank_i + k)``), over each channel's candidate list.
- ``dbsf``: distribution-based score fusion as in Qdrant: each list's scores are mapped
  through ``(s - (mean - 3 std)) / (6 std)`` (sample std; a list of one, or with zero
  variance, maps to 0.5), then summed with weights ``w_i`` (with weights 1 and 1 this is
  exactly Qdrant's DBSF).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from clipy_qdrant.errors import ConfigError

FusionMethod = Literal["weighted", "rrf", "dbsf"]
FUSION_METHODS: tuple[FusionMethod, ...] = ("weighted", "rrf", "dbsf")


@dataclass(frozen=True)
class FusionConfig:
    """How to fuse the ``text`` and ``image`` channels. Weights are finite and non-negative.

    Build a config from user input with ``from_weights``, which fills in a missing weight.
    """

    method: FusionMethod = "weighted"
    w_text: float = 0.5
    w_image: float = 0.5
    rrf_k: int = 60

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
    ) -> FusionConfig:
        """The config for user-given weights, either of which may be missing.

        Neither given: 0.5 each. One given: it must be within [0, 1] and the other is
        ``1 -`` it. Both given: any finite non-negative pair, not both 0.
        """
        for name, weight in (("w_text", w_text), ("w_image", w_image)):
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
        )

    @property
    def label(self) -> str:
        base = f"{self.method} w_text={self.w_text:g} w_image={self.w_image:g}"
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
) -> dict[str, float]:
    """``w_text * text + w_image * image`` for every id; both mappings must cover the same ids."""
    if text_scores.keys() != image_scores.keys():
        missing = set(text_scores) ^ set(image_scores)
        raise ValueError(
            f"weighted fusion needs both scores for every candidate; missing for {sorted(missing)[:5]}"
        )
    return {pid: w_text * text_scores[pid] + w_image * image_scores[pid] for pid in text_scores}


def rrf_scores(
    ranked_lists: Sequence[Sequence[str]], weights: Sequence[float], k: int
) -> dict[str, float]:
    """Weighted reciprocal-rank fusion over ranked id lists (best first)."""
    if len(ranked_lists) != len(weights):
        raise ValueError("one weight per ranked list")
    if k < 1:
        raise ValueError("rrf k must be >= 1")
    fused: dict[str, float] = {}
    for ranked, weight in zip(ranked_lists, weights, strict=True):
        if weight <= 0:
            continue
        for rank, pid in enumerate(ranked):
            fused[pid] = fused.get(pid, 0.0) + 1.0 / ((rank + 1.0) / weight + k - 1.0)
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
