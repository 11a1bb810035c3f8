"""Probe what a text query's search costs on an ingested store, grouped by how many engine
calls it made: the threshold algorithm of weighted fusion (``clipy_qdrant/retrieval.py``)
answers most queries from its first lists and deepens the rest, and the deepened ones make
the tail of a served load.

The query texts are the load script's (``benchmarks/load.py``: its seed searches and
``product_texts``, names and attribute phrases), each searched once through
:meth:`~clipy_qdrant.search.Searcher.search_page` with the server's settings (``k`` 24, the
engine defaults, ``CLIPY_QUERY_WORDS`` from the environment, ``preload`` first), after
``--warmup`` of them. It reports the CPU per query (``time.process_time``: mean, p50, p90,
p99) and, per number of engine calls (dense and lexical searches, payload reads), how many
queries made that many and their mean CPU. It counts calls on the store, not on the
retriever, so the same command measures any tree:

    PYTHONPATH=TREE python experiments/deepening_probe.py --store STORE [--texts 800]
        [--warmup 50] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from clipy_qdrant.config import Settings
from ingest.cli.shell import open_searcher

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load import product_texts

#: The store methods counted as engine calls.
COUNTED = ("search", "search_lexical", "retrieve")


def query_texts(store: Any, n: int, seed: int) -> list[str]:
    """``n`` distinct names and attribute phrases of the store's products, shuffled."""
    texts: dict[str, None] = {}
    for point in store.scroll():
        texts.update(dict.fromkeys(product_texts(point.payload)))
    pool = list(texts)
    random.Random(seed).shuffle(pool)
    return pool[:n]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--texts", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    store, searcher = open_searcher(Settings(store=args.store), query_cache=16)
    try:
        searcher.preload()
        texts = query_texts(store, args.texts + args.warmup, args.seed)
        calls: Counter[str] = Counter()
        for name in COUNTED:
            method = getattr(store, name)

            def counted(*a: Any, _method: Any = method, _name: str = name, **k: Any) -> Any:
                calls[_name] += 1
                return _method(*a, **k)

            setattr(store, name, counted)
        for text in texts[: args.warmup]:
            searcher.search_page(text, k=24)
        cpu: list[float] = []
        by_calls: dict[int, list[float]] = defaultdict(list)
        for text in texts[args.warmup :]:
            calls.clear()
            start = time.process_time()
            searcher.search_page(text, k=24)
            ms = (time.process_time() - start) * 1000
            cpu.append(ms)
            by_calls[sum(calls.values())].append(ms)
    finally:
        store.close()
    result = {
        "queries": len(cpu),
        "mean_ms": statistics.mean(cpu),
        "p50_ms": percentile(cpu, 0.5),
        "p90_ms": percentile(cpu, 0.9),
        "p99_ms": percentile(cpu, 0.99),
        "by_engine_calls": {
            str(n): {"queries": len(v), "mean_ms": statistics.mean(v)}
            for n, v in sorted(by_calls.items())
        },
    }
    print(
        f"{result['queries']} queries: CPU per query mean {result['mean_ms']:.1f} ms, "
        f"p50 {result['p50_ms']:.1f}, p90 {result['p90_ms']:.1f}, p99 {result['p99_ms']:.1f}"
    )
    for n, row in result["by_engine_calls"].items():
        print(f"  {n:>3} engine calls: {row['queries']:4d} queries, mean {row['mean_ms']:.1f} ms")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
