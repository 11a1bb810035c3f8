"""The query path side by side for source trees: a cold one-shot ``clipy search … --json``,
one text query's encoding, one text query end to end, one image query's encoding (decode
included) and end to end.

Each tree is put first on ``PYTHONPATH`` of its own child processes, and the trees take turns
round after round (a shared, noisy machine slows whichever runs at a bad moment; turns spread
that over all trees). Warm measures time one query at a time with a pause between queries, as
a user's queries come: a BLAS or ONNX Runtime worker that parks between queries has to wake
for the next one.

    python -m benchmarks.query_path_bench --store STORE --tree new=. --tree old=/tmp/old-tree
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Runs in a child with one tree on PYTHONPATH; prints one JSON line of millisecond samples.
CHILD = r"""
import json, sys, time
store_path, catalog, n_text, n_image, pause = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:6])
import numpy as np
from clipy_qdrant.encoders import get_encoder
from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.search import Searcher
from clipy_qdrant.store import open_store

colours = ["Red", "Navy Blue", "Black", "White", "Green", "Pink", "Grey", "Brown"]
kinds = ["Casual Shoes", "Tshirts", "Watches", "Kurtas", "Handbags", "Jeans", "Shirts"]
texts = [f"{g} {c} {k}" for g in ("Men", "Women") for c in colours for k in kinds]
texts = (texts * 4)[: int(n_text)]
import pyarrow.parquet as pq
from pathlib import Path
files = sorted(Path(catalog).rglob("*.parquet"))
column = pq.read_table(files[0], columns=["image"]).column("image")
rows = np.random.default_rng(0).choice(len(column), int(n_image), replace=False)
images = [column[int(r)].as_py()["bytes"] for r in sorted(rows)]

store = open_store(Path(store_path))
info = store.encoder_info()
searcher = Searcher(store, get_encoder(info.name))
fusion = FusionConfig(w_lexical=0)
def timed(items, fn):
    fn(items[0])
    out = []
    for item in items:
        time.sleep(pause)
        start = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - start) * 1000)
    return out
result = {
    "encode_text": timed(texts, lambda t: searcher.embed(t)),
    "end_to_end_text": timed(texts, lambda t: searcher.search(t, k=10, fusion=fusion)),
    "encode_image": timed(images, lambda b: searcher.embed(image=b)),
    "end_to_end_image": timed(images, lambda b: searcher.search(image=b, k=10, fusion=fusion)),
}
store.close()
print(json.dumps(result))
"""


def tree_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(tree), env.get("PYTHONPATH", "")) if part
    )
    return env


def cold_run(tree: Path, store: Path, query: str) -> float:
    """Seconds from process start to exit of ``clipy search QUERY --json``."""
    cmd = [sys.executable, "-m", "ingest.cli", "search", query, "--json", "--store", str(store)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, env=tree_env(tree), capture_output=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not json.loads(done.stdout):
        raise SystemExit(f"{tree}: clipy search failed: {done.stderr.decode()[-400:]}")
    return seconds


def warm_run(tree: Path, store: Path, catalog: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-c", CHILD, str(store), str(catalog)]
    cmd += [str(args.texts), str(args.images), str(args.pause)]
    done = subprocess.run(cmd, cwd=tree, env=tree_env(tree), capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: warm run failed: {done.stderr.decode()[-600:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def pick(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument(
        "--catalog", type=Path, default=Path("../shared/datasets/fashion-product-images-small")
    )
    parser.add_argument("--tree", action="append", required=True, help="LABEL=DIR, repeatable")
    parser.add_argument("--cold-runs", type=int, default=7)
    parser.add_argument("--warm-rounds", type=int, default=2)
    parser.add_argument("--texts", type=int, default=100)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--pause", type=float, default=0.01, help="seconds between queries")
    parser.add_argument("--query", default="red shoes")
    args = parser.parse_args()
    trees = {label: Path(d).resolve() for label, d in (t.split("=", 1) for t in args.tree)}
    store, catalog = args.store.resolve(), args.catalog.resolve()

    load_before = os.getloadavg()
    cold: dict[str, list[float]] = {label: [] for label in trees}
    for _ in range(args.cold_runs):
        for label, tree in trees.items():
            cold[label].append(cold_run(tree, store, args.query))
    warm: dict[str, dict[str, list[float]]] = {label: {} for label in trees}
    for _ in range(args.warm_rounds):
        for label, tree in trees.items():
            for name, samples in warm_run(tree, store, catalog, args).items():
                warm[label].setdefault(name, []).extend(samples)
    load_after = os.getloadavg()

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_1min": [round(load_before[0], 1), round(load_after[0], 1)],
        "cold_one_shot_s": {
            label: {
                "median": round(statistics.median(s), 3),
                "min": round(min(s), 3),
                "max": round(max(s), 3),
                "runs": len(s),
            }
            for label, s in cold.items()
        },
        "warm_ms": {
            label: {
                name: {
                    "p50": round(statistics.median(s), 2),
                    "p90": round(pick(s, 0.9), 2),
                    "p99": round(pick(s, 0.99), 2),
                    "n": len(s),
                }
                for name, s in measures.items()
            }
            for label, measures in warm.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
