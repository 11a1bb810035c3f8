"""Query latency outside the engine: encoding a text / an image query (decode included), a
whole query end to end through ``Searcher.search``, and the cold start of a one-shot
``clipy search … --json`` process."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import percentiles, time_each
from benchmarks.ingest_bench import REPO_ROOT, child_env
from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.search import QueryVectors, Searcher


def catalog_images(catalog: Path, n: int, seed: int) -> list[bytes]:
    """``n`` image files (JPEG bytes) of the catalog, a seeded sample of its rows."""
    import pyarrow.parquet as pq

    files = sorted(catalog.rglob("*.parquet")) if catalog.is_dir() else [catalog]
    table = pq.read_table(files[0], columns=["image"])
    rows = np.random.default_rng(seed).choice(table.num_rows, min(n, table.num_rows), replace=False)
    column = table.column("image")
    return [column[int(r)].as_py()["bytes"] for r in sorted(rows)]


def encode_queries(
    searcher: Searcher, texts: list[str], images: list[bytes]
) -> tuple[dict[str, Any], list[QueryVectors], list[np.ndarray]]:
    """Embed every query once, one at a time (the timed unit is one query)."""
    text_lat, text_qv = time_each(len(texts), lambda i: searcher.embed(texts[i]))
    image_lat, image_qv = time_each(len(images), lambda i: searcher.embed(image=images[i]))
    stats = {
        "encode_text": percentiles(text_lat),
        "encode_image_with_decode": percentiles(image_lat),
    }
    return stats, text_qv, [q.image for q in image_qv]


def end_to_end(searcher: Searcher, texts: list[str], images: list[bytes], k: int) -> dict[str, Any]:
    fusion = FusionConfig(w_lexical=0)
    text_lat, _ = time_each(len(texts), lambda i: searcher.search(texts[i], k=k, fusion=fusion))
    image_lat, _ = time_each(
        len(images), lambda i: searcher.search(image=images[i], k=k, fusion=fusion)
    )
    return {
        "end_to_end_text": percentiles(text_lat),
        "end_to_end_image": percentiles(image_lat),
    }


def cold_start(store: Path, query: str, runs: int = 5) -> dict[str, Any]:
    """Process start to JSON output of ``clipy search QUERY --json`` (median of ``runs``)."""
    cmd = [sys.executable, "-m", "ingest.cli", "search", query, "--store", str(store), "--json"]
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(cmd, env=child_env(), cwd=REPO_ROOT, capture_output=True, check=False)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
            return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
    return {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "runs": runs,
        "command": "clipy search " + repr(query) + " --json",
    }
