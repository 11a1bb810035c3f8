"""Pure parts of browsing a store, used by :class:`~clipy_qdrant.search.Searcher`: result
types for facets and product images, the check of filter fields against the store's
indexes, and maximal marginal relevance (MMR) over a fused candidate list.

MMR. Qdrant's engines offer MMR on one vector's nearest-neighbour query; clipy's ranking is
a fusion of two channels, so MMR runs here, over the fused candidate list. Each step picks
the candidate maximising ``(1 - diversity) * relevance - diversity * max_sim``, where
``relevance`` is the fused score min-max scaled to [0, 1] over the candidates (so that one
``diversity`` means the same for weighted, RRF and DBSF scores) and ``max_sim`` the highest
cosine similarity with a product already picked. A product's similarity vector is its unit
text vector and unit image vector side by side, scaled by 1/sqrt(2): the cosine of two such
vectors is the mean of their text cosine and their image cosine. ``diversity`` 0 keeps the
fused order, 1 ignores relevance after the first pick (Qdrant's ``diversity`` convention).
Ties are broken by product id.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clipy_qdrant.errors import ConfigError, UnknownFieldError
from clipy_qdrant.filters import Filter, fields_of

#: Index types whose values can be counted by a facet.
FACET_TYPES: frozenset[str] = frozenset({"keyword", "integer", "bool"})


@dataclass(frozen=True)
class FacetCount:
    """One value of a field and how many products (under the filter) have it."""

    value: str | int | bool
    count: int

    def to_dict(self) -> dict[str, str | int | bool]:
        return {"value": self.value, "count": self.count}


@dataclass(frozen=True)
class ProductImage:
    """A product's picture as stored with the vectors (its thumbnail)."""

    data: bytes
    media_type: str


@dataclass(frozen=True)
class ImageURL:
    """A product's picture given by the catalog as a URL."""

    url: str


def check_fields(names: Collection[str], indexed: Mapping[str, str], what: str = "field") -> None:
    """Raise :class:`UnknownFieldError` for the first of ``names`` that is not indexed."""
    for name in names:
        if name not in indexed:
            known = ", ".join(sorted(indexed)) or "none"
            raise UnknownFieldError(
                f"{what} {name!r} is not indexed in this store; indexed fields: {known}"
            )


def check_filter_fields(flt: Filter | None, indexed: Mapping[str, str]) -> None:
    """A filter on a field the store does not index matches nothing: that is an error."""
    check_fields(fields_of(flt), indexed)


def check_diversity(diversity: float | None) -> None:
    if diversity is not None and not (np.isfinite(diversity) and 0.0 <= diversity <= 1.0):
        raise ConfigError(f"diversity must be within [0, 1] (got {diversity})")


def similarity_vectors(
    text: Mapping[str, np.ndarray], image: Mapping[str, np.ndarray], ids: Sequence[str]
) -> np.ndarray:
    """Rows (one per id) whose dot products are the mean of the text and image cosines."""

    def unit(rows: list[np.ndarray]) -> np.ndarray:
        matrix = np.stack(rows).astype(np.float64)
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)

    both = np.hstack([unit([text[p] for p in ids]), unit([image[p] for p in ids])])
    return both / np.sqrt(2.0)


def mmr(
    ranked: Sequence[tuple[str, float]], vectors: np.ndarray, diversity: float, k: int
) -> list[tuple[str, float]]:
    """The first ``k`` picks of MMR over ``ranked`` (``(id, fused score)``, best first) with
    one similarity row per item in ``vectors``; each pick keeps its fused score."""
    check_diversity(diversity)
    n = len(ranked)
    if n == 0 or k <= 0:
        return []
    scores = np.array([s for _, s in ranked], dtype=np.float64)
    spread = float(scores.max() - scores.min())
    relevance = (scores - scores.min()) / spread if spread > 0 else np.ones(n)
    similarity = vectors @ vectors.T
    max_sim = np.full(n, -np.inf)
    picked: list[int] = []
    # Candidates in id order: max() keeps the first of equal values, the smallest id.
    free = sorted(range(n), key=lambda i: ranked[i][0])
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = (1.0 - diversity) * relevance - diversity * penalty
        best = max(free, key=lambda i: value[i])
        picked.append(best)
        free.remove(best)
        max_sim = np.maximum(max_sim, similarity[best])
    return [ranked[i] for i in picked]
