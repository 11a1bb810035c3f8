"""Probe the search-time beam width ``hnsw_ef`` of the channel lists on an ingested store:
recall of clipy's fused top-k against exact channel lists, and the search's CPU per query.

clipy's weighted fusion is exact when each channel list is the true top-``depth`` of its
channel (the threshold algorithm, ``clipy_qdrant/retrieval.py``). The lists come from HNSW,
so a product the graph walk misses can break that; a wider beam misses fewer and costs more.
This script runs the same queries through :class:`~clipy_qdrant.search.Searcher` (engine
defaults: spelling, lexical channel, hubness correction) with the channel searches made exact
(the reference) and at each ``--ef``, and reports:

- recall@k: the share of a run's hits whose fused score reaches the reference's k-th score
  (minus 1e-5: many products share a name, hence a text vector, hence a score);
- exact lists: the share of queries whose hits equal the reference's (ids and order);
- CPU ms per query of the search alone (query vectors computed once beforehand), the best of
  ``--rounds`` rounds, the settings taking turns round after round.

Query sets: ``--queries`` product names and attribute phrases of the catalog ("Men Black
Casual Shoes"), each unfiltered and under each ``--filter``; and as many image queries (the
stored image vector of a product used as a photo query, the product itself excluded).

    PYTHONPATH=$PWD python experiments/hnsw_ef_probe.py --store STORE [--queries 300]
        [--ef 32 64 128 256] [--filter gender=Men] [--filter baseColour=Black] [--k 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load import SEEDS, product_texts
from clipy_qdrant.config import apply_offline_environment

apply_offline_environment()

from clipy_qdrant.query import QueryVectors  # noqa: E402
from clipy_qdrant.search import Searcher  # noqa: E402
from clipy_qdrant.store.base import IMAGE  # noqa: E402
from ingest.cli.shell import build_settings, open_searcher  # noqa: E402

TIE = 1e-5


def query_texts(searcher: Searcher, n: int, seed: int) -> tuple[list[str], list[str]]:
    """Distinct names and attribute phrases (the load test's, ``benchmarks/load.py``) of the
    products its seed searches find, and the ids."""
    texts: list[str] = []
    ids: list[str] = []
    for s in SEEDS:
        for hit in searcher.search(s, k=100):
            ids.append(hit.product_id)
            texts.extend(product_texts(hit.payload))
    unique = list(dict.fromkeys(texts))
    rng = random.Random(seed)
    rng.shuffle(unique)
    pids = list(dict.fromkeys(ids))
    rng.shuffle(pids)
    return unique[:n], pids[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--store", required=True)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--filter", action="append", default=None)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    filters = args.filter if args.filter is not None else ["gender=Men", "baseColour=Black"]

    settings = build_settings(
        store=args.store, qdrant_url=None, api_key=None, collection=None, encoder=None
    )
    store, searcher = open_searcher(settings)
    try:
        texts, pids = query_texts(searcher, args.queries, args.seed)
        text_q = searcher.embed_many(texts, [None] * len(texts))
        stored = {
            p.product_id: p.vectors
            for p in store.retrieve(pids, with_payload=False, with_vectors=True)
        }
        image_q = [searcher.query_vectors(None, None, stored[pid][IMAGE]) for pid in pids]
        sets: dict[str, list[tuple[QueryVectors, list[str], list[str]]]] = {
            "text": [(q, [], []) for q in text_q],
            **{f"text, {f}": [(q, [f], []) for q in text_q] for f in filters},
            "image (stored vector, itself excluded)": [
                (q, [], [pid]) for q, pid in zip(image_q, pids, strict=True)
            ],
        }
        engine_search = store._search  # type: ignore[attr-defined]

        def exact_search(search: Any) -> Any:
            return engine_search(dataclasses.replace(search, exact=True))

        def run(name: str, ef: int | None) -> tuple[dict[str, list[Any]], dict[str, float]]:
            store._search = exact_search if ef is None else engine_search  # type: ignore[attr-defined]
            store.hnsw_ef = ef or 256  # type: ignore[attr-defined]
            results, cpu = {}, {}
            for set_name, queries in sets.items():
                c0 = time.process_time()
                results[set_name] = [
                    searcher.search_vectors(q, k=args.k, filters=f or None, exclude=x or None)
                    for q, f, x in queries
                ]
                cpu[set_name] = 1000 * (time.process_time() - c0) / len(queries)
            return results, cpu

        ref, _ = run("exact", None)  # also warms the id and hubness maps
        settings_ = [("exact lists", None), *((f"ef {e}", e) for e in args.ef)]
        best: dict[str, dict[str, float]] = {}
        found: dict[str, dict[str, list[Any]]] = {}
        for _ in range(args.rounds):
            for name, ef in settings_:
                res, cpu = run(name, ef)
                found[name] = res
                prev = best.setdefault(name, {})
                for s, v in cpu.items():
                    prev[s] = min(prev.get(s, v), v)
        rows = []
        for name, _ef in settings_:
            for set_name in sets:
                got, want = found[name][set_name], ref[set_name]
                hits = sum(len(w) for w in want)
                good = same = 0
                for g, w in zip(got, want, strict=True):
                    kth = w[-1].score if w else 0.0
                    good += sum(1 for h in g if h.score >= kth - TIE)
                    same += [h.product_id for h in g] == [h.product_id for h in w]
                rows.append(
                    {
                        "setting": name,
                        "queries": set_name,
                        "n": len(got),
                        "recall": good / max(hits, 1),
                        "same_list": same / len(got),
                        "cpu_ms": best[name][set_name],
                    }
                )
        print(f"| setting | queries | n | recall@{args.k} | same list | CPU ms/query |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(
                f"| {r['setting']} | {r['queries']} | {r['n']} | {r['recall']:.4f} | "
                f"{r['same_list']:.3f} | {r['cpu_ms']:.2f} |"
            )
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
