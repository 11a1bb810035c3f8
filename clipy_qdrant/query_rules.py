"""Query understanding: rules that set the fusion weights of one query from what it is.

Code-only queries. A query whose every word is a code (``A166``, ``BCFR02``, ``3017D``: the
words spelling correction keeps as typed, :func:`~clipy_qdrant.spelling.is_code_query`) asks
for the product carrying that code. The dense text vector of an arbitrary code is a confident
wrong match (a blusher at cosine 0.46 for a watch code the watch scores 0.15 on), while the
lexical channel matches the code exactly. When the lexical channel holds at least one product
with a word of the query (under the search's filter), the text channel's weight is 0 for that
query; the image and lexical weights stay. A code the catalog does not hold keeps the weights
asked for, as does a fusion without the lexical channel (``w_lexical`` 0) or without the image
channel (the text channel is then its only dense channel). Measured in docs/experiments.md.

A rule that fires is reported with the result (:class:`QueryRule`): the weights used and why,
so that a user sees why the fused scores ignore the text cosine. ``Searcher(code_queries=False)``
(``CLIPY_CODE_QUERIES=0``) turns the rule off.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from clipy_qdrant.fusion import FusionConfig

#: The name a result reports for the code-only rule.
CODE_ONLY = "code_only"


@dataclass(frozen=True)
class QueryRule:
    """A rule that changed the fusion weights of one search: its name, why it fired, and the
    fusion config the search used."""

    name: str
    reason: str
    fusion: FusionConfig

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason, "weights": fusion_weights(self.fusion)}


def fusion_weights(cfg: FusionConfig) -> dict[str, Any]:
    """The fusion method and channel weights of ``cfg``, as reported with a result."""
    return {
        "method": cfg.method,
        "w_text": cfg.w_text,
        "w_image": cfg.w_image,
        "w_lexical": cfg.w_lexical,
    }


def code_rule_applies(cfg: FusionConfig) -> bool:
    """Whether the code-only rule can change ``cfg``: it weighs the text, image and lexical
    channels (dropping the text channel leaves the image channel as the dense one)."""
    return cfg.w_text > 0 and cfg.w_image > 0 and cfg.w_lexical > 0


def code_only_fusion(cfg: FusionConfig) -> QueryRule:
    """The code-only rule applied to ``cfg`` (one that :func:`code_rule_applies` to)."""
    used = replace(cfg, w_text=0.0)
    return QueryRule(
        name=CODE_ONLY,
        reason="every word of the query is a code and the catalog holds it: the text "
        "channel's weight is 0 (the lexical channel matches codes, the text embedding of a "
        "code does not)",
        fusion=used,
    )


__all__ = ["CODE_ONLY", "QueryRule", "code_only_fusion", "code_rule_applies", "fusion_weights"]
