"""Search benchmark on an ingested store: latency per query kind, HNSW recall, size, memory.

Usage (after ``clipy ingest``):

    python benchmarks/bench_search.py --store ./clipy-data --queries 200 --out bench-out/search.json

Prints a table (stdout) and writes JSON. Query texts are attribute phrases built from the
stored payloads ("Men Red Casual Shoes"), so the numbers do not depend on a hand-picked set.
Such phrases have four words, so the hubness correction (``clipy_qdrant.hubness``) applies to
their image channel at the encoder's default strength; the "hubness off" rows search the
same vectors without it.
Recall is measured per channel: the store's HNSW top-10 against an exact search over the same
vectors (FAISS ``IndexFlatIP`` over every stored vector).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from clipy_qdrant.config import Settings, apply_offline_environment

apply_offline_environment()


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(pick(0.95), 3),
        "p99_ms": round(pick(0.99), 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def _dir_size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Settings().store)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-out/search.json"))
    args = parser.parse_args()

    import faiss
    import numpy as np

    from clipy_qdrant.encoders import get_encoder
    from clipy_qdrant.fusion import FusionConfig
    from clipy_qdrant.search import QueryVectors, Searcher
    from clipy_qdrant.store import IMAGE, TEXT, open_store

    t0 = time.perf_counter()
    store = open_store(args.store)
    open_s = time.perf_counter() - t0
    info = store.encoder_info()
    if info is None:
        print(f"store {args.store} is empty: run clipy ingest first", file=sys.stderr)
        return 1
    count = store.count()
    print(
        f"store {args.store}: {count} products, encoder {info.name} ({info.dim}-d)", file=sys.stderr
    )

    # Every stored vector, for the exact reference and for query phrases.
    ids: list[str] = []
    payloads: list[dict[str, Any]] = []
    vectors: dict[str, list[np.ndarray]] = {TEXT: [], IMAGE: []}
    for point in store.scroll(with_vectors=True):
        ids.append(point.product_id)
        payloads.append(point.payload)
        for name in (TEXT, IMAGE):
            vectors[name].append(point.vectors[name])
    exact = {}
    for name in (TEXT, IMAGE):
        mat = np.ascontiguousarray(np.stack(vectors[name]).astype(np.float32))
        mat /= np.linalg.norm(mat, axis=1, keepdims=True)
        index = faiss.IndexFlatIP(mat.shape[1])
        index.add(mat)
        exact[name] = index

    rng = random.Random(args.seed)
    phrases = []
    for payload in rng.sample(payloads, min(args.queries, len(payloads))):
        parts = [payload.get(key) for key in ("gender", "baseColour", "usage", "articleType")]
        phrases.append(" ".join(str(p) for p in parts if p))

    encoder = get_encoder(info.name)
    searcher = Searcher(store, encoder)

    rows: list[dict[str, Any]] = []

    def timed(label: str, fn) -> None:
        samples = []
        for i in range(len(phrases)):
            start = time.perf_counter()
            fn(i)
            samples.append((time.perf_counter() - start) * 1000)
        rows.append({"case": label, **_percentiles(samples), "queries": len(samples)})

    encoder.encode_texts(["warm-up"])
    query_vectors: list[QueryVectors] = []
    timed("encode one query text", lambda i: query_vectors.append(searcher.embed(phrases[i])))
    plain = [QueryVectors(text=q.text, image=q.image) for q in query_vectors]
    timed(
        "search text channel only (w_text=1)",
        lambda i: searcher.search_vectors(
            query_vectors[i], k=args.k, fusion=FusionConfig(w_text=1, w_image=0)
        ),
    )
    timed(
        "search image channel only (w_image=1)",
        lambda i: searcher.search_vectors(
            query_vectors[i], k=args.k, fusion=FusionConfig(w_text=0, w_image=1)
        ),
    )
    timed(
        "search image channel only, hubness off",
        lambda i: searcher.search_vectors(
            plain[i], k=args.k, fusion=FusionConfig(w_text=0, w_image=1)
        ),
    )
    timed("search weighted 0.5/0.5", lambda i: searcher.search_vectors(query_vectors[i], k=args.k))
    timed(
        "search weighted 0.5/0.5, hubness off",
        lambda i: searcher.search_vectors(plain[i], k=args.k),
    )
    timed(
        "search weighted + filter gender, year>=2012",
        lambda i: searcher.search_vectors(
            query_vectors[i], k=args.k, filters=["gender=Men,Women", "year>=2012"]
        ),
    )
    timed(
        "search rrf",
        lambda i: searcher.search_vectors(
            query_vectors[i], k=args.k, fusion=FusionConfig("rrf", 1, 1)
        ),
    )
    timed(
        "search dbsf",
        lambda i: searcher.search_vectors(
            query_vectors[i], k=args.k, fusion=FusionConfig("dbsf", 1, 1)
        ),
    )
    timed("end to end: encode + weighted search", lambda i: searcher.search(phrases[i], k=args.k))

    # Tie-aware recall: many products share a name (hence a text vector); a returned product
    # is correct when its exact score reaches the exact k-th score.
    row_of = {pid: i for i, pid in enumerate(ids)}
    matrices = {name: exact[name].reconstruct_n(0, exact[name].ntotal) for name in (TEXT, IMAGE)}
    recall = {}
    for name in (TEXT, IMAGE):
        hits_total = 0
        for qv in query_vectors:
            q = qv.for_channel(name)
            exact_scores, _ = exact[name].search(q[None, :].astype(np.float32), args.k)
            got = [row_of[p.product_id] for p in store.search(name, q, args.k)]
            hits_total += int(np.sum(matrices[name][got] @ q >= exact_scores[0, -1] - 1e-5))
        recall[name] = round(hits_total / (args.k * len(query_vectors)), 4)

    result = {
        "store": str(args.store),
        "products": count,
        "encoder": {"name": info.name, "dim": info.dim},
        "hubness": searcher.hubness,
        "open_seconds": round(open_s, 3),
        "disk_mb": _dir_size_mb(args.store),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hnsw_recall_at_10": recall,
        "latency": rows,
        "machine": {"cpus": os.cpu_count()},
    }
    store.close()

    print(f"{'case':<46} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(
            f"{row['case']:<46} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['p99_ms']:>8.2f}"
        )
    print(
        f"HNSW recall@10 vs exact (tie-aware): text {recall[TEXT]:.4f}, image {recall[IMAGE]:.4f}"
    )
    print(
        f"open {result['open_seconds']} s, disk {result['disk_mb']} MB, peak RSS {result['peak_rss_mb']} MB"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
