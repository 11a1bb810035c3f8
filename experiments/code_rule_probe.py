"""Probe the code-only query rule (:mod:`clipy_qdrant.query_rules`) with the rule off, then on.

Queries: clipy eval's generated sets (code, attribute, brand, known-item, typo). ``validation``
makes them about TRAINING products (``int(id) % 5 != 0``) and searches the whole catalog;
``heldout`` makes them as ``clipy eval make-queries`` does (held-out products; a held-out
look). Counted: the queries of each set the rule fires on at the engine defaults, and each
set's P@1, nDCG@10, MRR@10 and R@10 through :func:`clipy_qdrant.eval.runner.run_eval` with
``Searcher.code_queries`` False, then True. The embedded store is held by one process: run
it on a copy.

    python experiments/code_rule_probe.py validation|heldout --store PATH [--sets code,brand]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from clipy_qdrant.config import Settings
from clipy_qdrant.eval.catalog_queries import make_query_sets
from clipy_qdrant.eval.runner import catalog_products, run_eval
from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.split import is_heldout
from ingest.cli.shell import open_searcher

METRICS = ("precision@1", "ndcg@10", "mrr@10", "recall@10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("validation", "heldout"))
    parser.add_argument("--store", required=True)
    parser.add_argument("--sets", default="code,attribute,brand,known-item,typo")
    args = parser.parse_args()
    store, searcher = open_searcher(Settings(store=args.store))
    try:
        products = catalog_products(store)
        if args.which == "validation":
            sets = make_query_sets(
                products, heldout_only=True, heldout=lambda pid: not is_heldout(pid)
            )
        else:
            sets = make_query_sets(products, heldout_only=True)
        queries = [q for name in args.sets.split(",") for q in sets[name]]
        if args.which == "validation":  # training-pool queries search the whole catalog
            queries = [
                dataclasses.replace(q, gallery="all") if q.gallery == "heldout" else q
                for q in queries
            ]
        cfg = FusionConfig()
        fires: dict[str, list[int]] = {}
        vectors = searcher.embed_many([q.text for q in queries], [None] * len(queries))
        for q, v in zip(queries, vectors, strict=True):
            fired = searcher.query_rules(v, [cfg], None)[0] is not None
            count = fires.setdefault(q.set, [0, 0])
            count[0] += fired
            count[1] += 1
            if fired and q.set != "code":
                print(f"fires on {q.set}: {q.text!r}")
        print("fires (fired, queries):", json.dumps(fires))
        out: dict[str, dict] = {}
        for on in (False, True):
            searcher.code_queries = on
            started = time.time()
            split = "all" if args.which == "validation" else None
            run = run_eval(
                searcher, queries, [cfg], split=split, products=products, show_progress=False
            )
            for name, result in run.sets.items():
                means = result.mean_scores(0)
                out.setdefault(name, {"n": len(result.query_ids)})["on" if on else "off"] = {
                    m: round(means[m], 4) for m in METRICS
                }
            print(f"rule {'on' if on else 'off'}: {time.time() - started:.0f} s")
        for name, row in out.items():
            print(
                f"{name:24s} n={row['n']:5d}  "
                + "  ".join(f"{m} {row['off'][m]:.4f} -> {row['on'][m]:.4f}" for m in METRICS)
            )
    finally:
        store.close()


if __name__ == "__main__":
    main()
