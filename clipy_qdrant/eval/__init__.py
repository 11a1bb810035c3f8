"""Evaluation: query sets, ranking metrics, weight grids and A/B tests of fusion settings."""

from __future__ import annotations

from clipy_qdrant.eval.metrics import PRIMARY_METRIC, evaluate_per_query, evaluate_rankings

__all__ = ["PRIMARY_METRIC", "evaluate_per_query", "evaluate_rankings"]
