"""Ingest throughput on Ray (local mode) against the plain pipeline, same catalog slice, same
encoder, each run into a fresh embedded store.

Usage:

    python benchmarks/bench_ray_ingest.py --limit 2000 --actors 1 2 4 --out bench-out/ray.json

Runs the plain ingest first and last (the machine may be shared: compare each Ray run with
the plain runs around it), and a Ray run per actor count. ``products/s`` is the report's
(stored products over the load time, encoder loads in the actors included); ``wall_s`` also
counts starting Ray and the driver's own encoder load. No HNSW build, no hubness.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clipy_qdrant.encoders import get_encoder
from clipy_qdrant.store import open_store
from ingest.distributed import RayOptions, run_ray_ingest
from ingest.pipeline import run_ingest
from ingest.readers import open_catalog


def _one(catalog: str, limit: int, encoder: str, actors: int | None, batch: int) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "store")
        try:
            common: dict[str, Any] = {
                "batch_size": batch,
                "progress": False,
                "build_index": False,
                "hubness": False,
            }
            if actors is None:
                report = run_ingest(
                    open_catalog(catalog, limit=limit), store, get_encoder(encoder), **common
                )
            else:
                report = run_ray_ingest(
                    open_catalog(catalog, limit=limit),
                    store,
                    functools.partial(get_encoder, encoder),
                    RayOptions(actors=actors, batch_size=batch),
                    **common,
                )
        finally:
            store.close()
    return {
        "mode": "plain" if actors is None else f"ray, {actors} actor{'s' * (actors > 1)}",
        "stored": report.stored,
        "seconds": round(report.seconds, 2),
        "products_per_s": round(report.products_per_s, 1),
        "wall_s": round(time.perf_counter() - started, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default="../shared/datasets/fashion-product-images-small")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--encoder", default="fashion-mini")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runs = []
    for actors in [None, *args.actors, None]:
        run = _one(args.catalog, args.limit, args.encoder, actors, args.batch_size)
        runs.append(run)
        print(json.dumps(run), flush=True)
    result = {"cpus": os.cpu_count(), "limit": args.limit, "encoder": args.encoder, "runs": runs}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'mode':<16} {'stored':>7} {'products/s':>11} {'wall s':>7}", file=sys.stderr)
    for run in runs:
        print(
            f"{run['mode']:<16} {run['stored']:>7} {run['products_per_s']:>11} {run['wall_s']:>7}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
