"""Ingest measured from the outside: ``clipy ingest`` runs in a child process, whose wall
time and peak RSS (``os.wait4``'s resource usage of that child) are recorded beside the
stage times of its JSON report and the store's size on disk.

The report exposes three stages: embedding + writing (``seconds``: reading, decoding,
encoding and upserting overlap in one pipelined loop, so they are one stage), hubness values
(``hubness_seconds``) and the HNSW build (``index_seconds``). Model load and process start
are the wall time minus the three.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import disk_usage

REPO_ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """The environment of child processes: this checkout's packages first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run_ingest(catalog: Path, store: Path, limit: int | None, report: Path) -> dict[str, Any]:
    """Ingest ``catalog`` (its first ``limit`` rows) into ``store`` in a child process."""
    cmd = [sys.executable, "-m", "ingest.cli", "ingest", str(catalog), "--store", str(store)]
    cmd += ["--report", str(report)]
    if limit:
        cmd += ["--limit", str(limit)]
    print(f"ingest: {' '.join(cmd[1:])}", file=sys.stderr)
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO_ROOT
    )
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").replace("\r", "\n").strip().splitlines()[-5:]
        raise RuntimeError(f"ingest failed (exit {proc.returncode}): " + " | ".join(tail))
    data = json.loads(report.read_text())
    stages = {
        "embed_and_write_s": data["seconds"],
        "embed_and_write_products_per_s": data["products_per_s"],
        "hubness_s": data["hubness_seconds"],
        "hnsw_build_s": data["index_seconds"],
    }
    accounted = data["seconds"] + data["hubness_seconds"] + data["index_seconds"]
    return {
        "products": data["stored"],
        "skipped": data["skipped_total"],
        "wall_s": round(wall, 2),
        "products_per_s_wall": round(data["stored"] / wall, 1) if wall else 0.0,
        "stages": stages,
        "start_and_model_load_s": round(wall - accounted, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "store": disk_usage(store),
        "stage_note": "decode, encode and upsert overlap in one pipelined stage (the report's "
        "'seconds'); hubness and HNSW build are separate stages of the report",
    }
