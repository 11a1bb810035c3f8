"""Evaluation: query sets, ranking metrics, weight grids and A/B tests of fusion settings.

- :mod:`~clipy_qdrant.eval.metrics`: pure ranking metrics (P/R/nDCG/MRR/MAP/hit rate @k).
- :mod:`~clipy_qdrant.eval.queries`: the query model and its JSONL files.
- :mod:`~clipy_qdrant.eval.catalog_queries`: known-item, category, attribute, image and
  composed query generators over the catalog payloads.
- :mod:`~clipy_qdrant.eval.shopper_queries`: typo, product-code and brand query generators.
- :mod:`~clipy_qdrant.eval.perturb`: shopper-photo perturbations of images (PIL + numpy).
- :mod:`~clipy_qdrant.eval.photo_queries`: perturbed held-out images as query sets.
- :mod:`~clipy_qdrant.eval.runner`: runs queries through the Searcher over a fusion grid.
- :mod:`~clipy_qdrant.eval.ab`: paired bootstrap CI and randomization test.
- :mod:`~clipy_qdrant.eval.report`: terminal table, JSON, per-query CSV, PNG plot.

Only the light modules are imported here; the runner and the reports import the store and
search layers, so import them from their modules.
"""

from __future__ import annotations

from clipy_qdrant.eval.ab import ABReport, ABResult, ab_compare, ab_test
from clipy_qdrant.eval.catalog_queries import make_query_sets
from clipy_qdrant.eval.metrics import (
    PRIMARY_METRIC,
    evaluate_per_query,
    evaluate_rankings,
    score_query,
)
from clipy_qdrant.eval.queries import EvalQuery, read_queries, write_queries

__all__ = [
    "PRIMARY_METRIC",
    "ABReport",
    "ABResult",
    "EvalQuery",
    "ab_compare",
    "ab_test",
    "evaluate_per_query",
    "evaluate_rankings",
    "make_query_sets",
    "read_queries",
    "score_query",
    "write_queries",
]
