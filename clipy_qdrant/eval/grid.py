"""The fusion settings an evaluation sweeps: the weight grid, the ``--a``/``--b`` setting specs
of an A/B test, and the keys that name a setting in reports."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from clipy_qdrant.errors import ConfigError
from clipy_qdrant.fusion import DEFAULT_W_LEXICAL, FUSION_METHODS, FusionConfig


def weight_grid(
    step: float = 0.1,
    methods: Sequence[str] = FUSION_METHODS,
    rrf_k: int = 60,
    lexical: Sequence[float] = (0.0, DEFAULT_W_LEXICAL),
) -> list[FusionConfig]:
    """``w_image`` from 0 to 1 by ``step`` (``w_text = 1 - w_image``) for each method and each
    lexical weight of ``lexical``.

    A weight of 0 drops a channel, so ``w_image=0`` with ``w_lexical=0`` is text vector only
    and ``w_image=1`` with ``w_lexical=0`` image vector only (for a text query: text against
    product images).
    """
    if not 0 < step <= 1:
        raise ConfigError(f"weight step must be within (0, 1] (got {step})")
    n = round(1 / step)
    if abs(n * step - 1) > 1e-9:
        raise ConfigError(f"weight step must divide 1 evenly, like 0.1, 0.25 or 0.5 (got {step})")
    for method in methods:
        if method not in FUSION_METHODS:
            raise ConfigError(f"unknown fusion method {method!r}; use {', '.join(FUSION_METHODS)}")
    for w in lexical:
        if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0):
            raise ConfigError(f"lexical weights must be numbers >= 0 (got {w!r})")
    return [
        FusionConfig.from_weights(method, w_image=round(i / n, 10), rrf_k=rrf_k, w_lexical=w)
        for method in methods
        for w in dict.fromkeys(float(x) for x in lexical)
        for i in range(n + 1)
    ]


_SPEC_KEYS = {"method", "w_image", "w_text", "w_lexical", "rrf_k", "k"}


def parse_fusion_spec(spec: str) -> FusionConfig:
    """``"w_image=0.8"``, ``"method=rrf,w_image=0.3"``, ``"w_text=1,w_image=0.5,method=dbsf"``,
    ``"w_image=0.5,w_lexical=0.5"``.

    Weights follow ``FusionConfig.from_weights`` (one of ``w_text`` / ``w_image`` given alone
    implies the other as ``1 -`` it; ``w_lexical`` missing is the default lexical weight); the
    method defaults to ``weighted``.
    """
    values: dict[str, str] = {}
    for part in (p.strip() for p in re.split(r"[,\s]+", spec.strip()) if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or key not in _SPEC_KEYS or not value:
            raise ConfigError(
                f"fusion setting {spec!r}: expected key=value pairs of {', '.join(sorted(_SPEC_KEYS))}"
            )
        values[key] = value
    if not values:
        raise ConfigError("empty fusion setting; e.g. w_image=0.8 or method=rrf,w_image=0.5")
    try:
        w_image = float(values["w_image"]) if "w_image" in values else None
        w_text = float(values["w_text"]) if "w_text" in values else None
        w_lexical = float(values["w_lexical"]) if "w_lexical" in values else None
        rrf_k = int(values.get("rrf_k", values.get("k", "60")))
    except ValueError:
        raise ConfigError(
            f"fusion setting {spec!r}: weights must be numbers, rrf_k a whole number"
        ) from None
    try:
        return FusionConfig.from_weights(
            values.get("method", "weighted"),
            w_text=w_text,
            w_image=w_image,
            rrf_k=rrf_k,
            w_lexical=w_lexical,
        )
    except ConfigError as exc:
        raise ConfigError(f"fusion setting {spec!r}: {exc}") from None


def config_key(cfg: FusionConfig) -> dict[str, Any]:
    """A config as plain JSON values."""
    out: dict[str, Any] = {"method": cfg.method, "w_text": cfg.w_text, "w_image": cfg.w_image}
    if cfg.w_lexical > 0:
        out["w_lexical"] = cfg.w_lexical
    if cfg.method == "rrf":
        out["rrf_k"] = cfg.rrf_k
    return out


def image_share(cfg: FusionConfig) -> float:
    """``w_image / (w_text + w_image)``: the x axis of a weight sweep."""
    return cfg.w_image / (cfg.w_text + cfg.w_image)


# -- split ---------------------------------------------------------------------------------------
