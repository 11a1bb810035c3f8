"""Store benchmark on synthetic catalog-like data: write speed, HNSW build, size, reopen, and the
recall / latency trade-off of ``hnsw_ef`` against the exact FAISS oracle.

Usage:

    python benchmarks/bench_store.py --n 20000 --dim 256 --out bench-out/store.json

Prints a table (stdout) and writes JSON. Data come from ``tests/oracle.make_products``
(vectors clustered by article type and colour, image = text + noise), so no catalog or model
is needed; numbers on real embeddings are in ``bench_search.py``. Each query is a stored
text vector plus a little noise. Filtered subsets smaller than the full-scan threshold
(10 MB of vectors) are searched exactly, hence their recall of 1.0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
    }


def _dir_size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--client-n", type=int, default=5000, help="points for the :memory: run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-out/store.json"))
    args = parser.parse_args()

    import numpy as np
    from oracle import Oracle, make_products

    from clipy_qdrant.encoders.base import EncoderInfo
    from clipy_qdrant.filters import parse_filter
    from clipy_qdrant.store import IMAGE, TEXT, FieldType, PointRecord
    from clipy_qdrant.store.client import ClientStore
    from clipy_qdrant.store.edge import EdgeStore

    ids, vectors, payloads = make_products(args.n, args.dim, args.seed)
    points = [
        PointRecord(pid, {IMAGE: vectors[IMAGE][i], TEXT: vectors[TEXT][i]}, payloads[i], "h")
        for i, pid in enumerate(ids)
    ]
    oracle = Oracle(ids, vectors, payloads)
    rng = np.random.default_rng(args.seed + 1)
    # A query near one product (noise of norm ~0.5, cosine ~0.9 to it), as a real query is
    # near its best match; per-dimension noise of fixed size would swamp a unit vector.
    queries = [
        (vectors[TEXT][r] + 0.5 * rng.standard_normal(args.dim) / np.sqrt(args.dim)).astype(
            np.float32
        )
        for r in rng.integers(0, args.n, args.queries)
    ]
    filters = {
        "none": None,
        "gender=Women": parse_filter(["gender=Women"]),
        "colour any-of + year": parse_filter(["baseColour=Red,Blue", "year>=2012"]),
    }
    encoder = EncoderInfo("bench", args.dim)
    indexed: dict[str, FieldType] = {
        "gender": "keyword",
        "baseColour": "keyword",
        "year": "integer",
    }
    result: dict[str, Any] = {"n": args.n, "dim": args.dim, "queries": args.queries}

    def sweep(store: Any, efs: list[int | None]) -> list[dict[str, Any]]:
        rows = []
        want = {
            (name, using, qi): {i for i, _ in oracle.search(using, q, args.k, flt)}
            for name, flt in filters.items()
            for using in (IMAGE, TEXT)
            for qi, q in enumerate(queries)
        }
        for ef in efs:
            if ef is not None:
                store.hnsw_ef = ef
            for name, flt in filters.items():
                found, lat = 0, []
                for using in (IMAGE, TEXT):
                    for qi, q in enumerate(queries):
                        t0 = time.perf_counter()
                        hits = store.search(using, q, args.k, flt, exact=ef is None)
                        lat.append((time.perf_counter() - t0) * 1e3)
                        found += len({h.product_id for h in hits} & want[(name, using, qi)])
                total = sum(
                    len(want[(name, u, qi)]) for u in (IMAGE, TEXT) for qi in range(len(queries))
                )
                rows.append(
                    {
                        "hnsw_ef": "exact" if ef is None else ef,
                        "filter": name,
                        f"recall@{args.k}": round(found / max(total, 1), 4),
                        **_percentiles(lat),
                    }
                )
        return rows

    with tempfile.TemporaryDirectory(prefix="clipy-bench-") as tmp:
        path = Path(tmp) / "store"
        store = EdgeStore(path)
        store.ensure_collection(encoder, indexed)
        t0 = time.perf_counter()
        store.upsert(points)
        upsert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.build_index()
        build_s = time.perf_counter() - t0
        stats = store.stats()
        store.close()
        t0 = time.perf_counter()
        store = EdgeStore(path)
        reopen_s = time.perf_counter() - t0
        result["edge"] = {
            "upsert_s": round(upsert_s, 2),
            "upsert_points_per_s": round(args.n / upsert_s),
            "build_index_s": round(build_s, 2),
            "reopen_s": round(reopen_s, 3),
            "disk_mb": _dir_size_mb(path),
            **stats,
            "search": sweep(store, [None, *args.ef]),
        }
        store.close()

    if args.client_n:
        small = args.client_n
        client = ClientStore(":memory:")
        client.ensure_collection(encoder, indexed)
        t0 = time.perf_counter()
        client.upsert(points[:small])
        upsert_s = time.perf_counter() - t0
        lat: dict[str, list[float]] = {name: [] for name in filters}
        for name, flt in filters.items():
            for q in queries[:20]:
                t0 = time.perf_counter()
                client.search(TEXT, q, args.k, flt)
                lat[name].append((time.perf_counter() - t0) * 1e3)
        result["client_memory"] = {
            "n": small,
            "upsert_s": round(upsert_s, 2),
            "search": {name: _percentiles(v) for name, v in lat.items()},
        }
        client.close()

    edge = result["edge"]
    print(
        f"edge: {args.n} points x 2 x {args.dim}-d: upsert {edge['upsert_s']} s "
        f"({edge['upsert_points_per_s']}/s), build_index {edge['build_index_s']} s, "
        f"reopen {edge['reopen_s']} s, {edge['disk_mb']} MB, {edge['segments']} segments"
    )
    print(f"{'hnsw_ef':>8}  {'filter':<22} {'recall':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for row in edge["search"]:
        print(
            f"{row['hnsw_ef']!s:>8}  {row['filter']:<22} {row[f'recall@{args.k}']:>7.4f} "
            f"{row['p50_ms']:>8.3f} {row['p95_ms']:>8.3f}"
        )
    if "client_memory" in result:
        cm = result["client_memory"]
        print(
            f"client :memory: {cm['n']} points: upsert {cm['upsert_s']} s; search p50 ms:", end=""
        )
        print("".join(f"  {k}: {v['p50_ms']}" for k, v in cm["search"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
