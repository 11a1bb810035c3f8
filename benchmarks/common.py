"""Helpers shared by the benchmark modules: percentiles, timing, sizes on disk, table cells."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Catalog copy used when none is given (``CLIPY_CATALOG`` overrides it, as for the CLI).
DEFAULT_CATALOG = Path("../shared/datasets/fashion-product-images-small")


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean of millisecond samples (nearest rank), rounded to 1 µs."""
    ordered = sorted(samples_ms)
    if not ordered:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(pick(0.95), 3),
        "p99_ms": round(pick(0.99), 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "n": len(ordered),
    }


def time_each(n: int, fn: Callable[[int], Any], warmup: int = 1) -> tuple[list[float], list[Any]]:
    """Call ``fn(i)`` for ``i < n``; return the milliseconds of each call and the results.

    The first ``warmup`` calls run once more before timing (caches, lazy imports)."""
    for i in range(min(warmup, n)):
        fn(i)
    samples, results = [], []
    for i in range(n):
        start = time.perf_counter()
        results.append(fn(i))
        samples.append((time.perf_counter() - start) * 1000)
    return samples, results


def disk_usage(path: Path) -> dict[str, float]:
    """Apparent size (sum of ``st_size``) and allocated size (``st_blocks * 512``) in MB."""
    apparent = allocated = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return {"apparent_mb": round(apparent / 1e6, 1), "allocated_mb": round(allocated / 1e6, 1)}


def ms(stats: dict[str, float] | None, keys: tuple[str, ...] = ("p50_ms", "p99_ms")) -> str:
    """``"1.23 / 4.56 ms"`` for the given percentile keys of a stats dict."""
    if not stats:
        return ""
    return " / ".join(f"{stats[k]:.2f}" for k in keys) + " ms"


def ratio(other: dict[str, float] | None, base: dict[str, float] | None) -> str:
    """``"3.1× faster"`` / ``"12× slower"``: ``base``'s p50 against ``other``'s."""
    if not other or not base or not base.get("p50_ms") or not other.get("p50_ms"):
        return ""
    r = other["p50_ms"] / base["p50_ms"]
    factor = r if r >= 1 else 1 / r
    text = f"{factor:.0f}" if factor >= 10 else f"{factor:.1f}"
    return f"{text}× faster" if r >= 1 else f"{text}× slower"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import platform

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
