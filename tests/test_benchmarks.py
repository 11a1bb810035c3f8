"""The benchmark entry point in quick mode: a 5,000-product slice ingested, every search
configuration measured on the embedded store, qdrant-client ``:memory:`` and FAISS, recall
checked against the exact oracle (exit 1 below 0.99), one markdown table and a JSON file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.catalog, pytest.mark.slow]


def test_quick_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| measure | clipy edge | clipy :memory: | FAISS flat")
    assert sum(1 for line in done.stdout.splitlines() if line.startswith("| ---")) == 1
    for label in (
        "search: text-only",
        "search: RRF",
        "search: DBSF",
        "weighted w_text=0.5",
        "encode text query",
        "end to end text query",
        "ingest: peak RSS",
        "store on disk",
        "cold `clipy search",
    ):
        assert any(label in line for line in table), label

    result = json.loads((out / "results.json").read_text())
    assert result["mode"] == "quick"
    assert result["products"] == 5000
    assert result["recall_failures"] == []
    assert {"ingest", "search", "latency", "cold_start", "machine"} <= result.keys()
    assert {"wall_s", "peak_rss_mb", "stages", "store"} <= result["ingest"].keys()
    assert result["ingest"]["store"]["allocated_mb"] > 0
    cases = {row["case"]: row for row in result["search"]["cases"]}
    weighted = [name for name in cases if name.startswith("weighted w_text=")]
    assert len(weighted) == 11
    like = cases.pop("more like this (like=product)")
    assert like["edge"]["p50_ms"] > 0 and "no oracle" in like["note"]
    for name, row in cases.items():
        if "skipped" in row:
            continue
        assert {"edge", "memory", "faiss"} <= row.keys(), name
        for system in ("edge", "memory", "faiss"):
            assert row[system]["recall"] >= 0.99, (name, system)
            assert row[system]["p50_ms"] > 0
    assert result["cold_start"]["median_s"] > 0
    assert {"encode_text", "encode_image_with_decode", "end_to_end_text"} <= result[
        "latency"
    ].keys()
