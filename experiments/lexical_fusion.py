"""Lexical channel and spelling correction inside clipy's search: nDCG@10 / P@10 of the
known-item, attribute, typo, code and brand sets under a grid of lexical weights and fusion
methods, with and without the correction, on an ingested store (issue #23).

Two looks, each on its own queries:

- ``validation``: queries about fold-1 products (``int(id) % 5 == 1``), a fold the shipped
  model was trained on. Rule-based sets (attribute, typo, brand) are judged within fold 1
  (a filter on every search and relevant set); known-item and code search the whole store.
  Used to choose the default lexical weight (a fusion setting, not model weights).
- ``heldout``: clipy eval's own sets (held-out products, fold 0), for the final look only.

Typo sets are also scored against their clean phrases (the attribute queries they were
made from), matched query by query.

    PYTHONPATH=$PWD python experiments/lexical_fusion.py --store /tmp/lex8k --look validation
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

from clipy_qdrant.encoders import get_encoder
from clipy_qdrant.eval.catalog_queries import QuerySetSizes, make_query_sets
from clipy_qdrant.eval.runner import catalog_products, run_eval
from clipy_qdrant.filters import Filter, Match
from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.search import Searcher
from clipy_qdrant.split import fold_of
from clipy_qdrant.store import open_store
from clipy_qdrant.store.base import PRODUCT_ID_KEY

SETS = ("known-item", "attribute", "typo", "code", "brand")
LEXICAL_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


def configs() -> list[FusionConfig]:
    out = [FusionConfig("weighted", 0.5, 0.5, w_lexical=w) for w in LEXICAL_WEIGHTS]
    for method in ("rrf", "dbsf"):
        out += [FusionConfig(method, 0.5, 0.5, w_lexical=w) for w in (0.0, 0.5, 1.0)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--look", choices=("validation", "heldout"), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--known-item", type=int, default=500)
    ap.add_argument("--attribute", type=int, default=150)
    args = ap.parse_args()

    store = open_store(args.store)
    encoder = get_encoder(store.encoder_info().name)  # type: ignore[union-attr]
    products = catalog_products(store)
    sizes = QuerySetSizes(
        known_item=args.known_item,
        attribute=args.attribute,
        typo=args.attribute,
        code=150,
        brand=100,
        image=1,
        composed=1,
    )
    grid = configs()
    runs: list[tuple[str, list, Filter | None, str | None]] = []
    if args.look == "validation":
        sets = make_query_sets(products, sizes=sizes, heldout=lambda pid: fold_of(pid) == 1)
        fold = tuple(
            sorted(str(p[PRODUCT_ID_KEY]) for p in products if fold_of(p[PRODUCT_ID_KEY]) == 1)
        )
        within = Filter(must=(Match(PRODUCT_ID_KEY, fold),))
        ruled = [
            dataclasses.replace(q, gallery="all")
            for name in ("attribute", "typo", "brand")
            for q in sets[name]
        ]
        whole = [q for name in ("known-item", "code") for q in sets[name]]
        runs = [("fold1", ruled, within, "all"), ("whole", whole, None, "all")]
    else:
        sets = make_query_sets(products, sizes=sizes)
        runs = [("heldout", [q for name in SETS for q in sets[name]], None, None)]
    report: dict = {
        "look": args.look,
        "store": args.store,
        "products": len(products),
        "configs": [c.label for c in grid],
        "sets": {},
    }
    for spelling in (True, False):
        searcher = Searcher(store, encoder, spelling=spelling)
        for label, queries, flt, split in runs:
            if not spelling:
                queries = [q for q in queries if q.set.startswith("typo/") or q.set == "attribute"]
            if not queries:
                continue
            started = time.perf_counter()
            run = run_eval(
                searcher, queries, grid, ks=(1, 10), split=split, filters=flt, show_progress=False
            )
            print(
                f"{label} spelling={spelling}: {len(queries)} queries in {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
            clean: dict[str, dict] = {}
            if "attribute" in run.sets:
                res = run.sets["attribute"]
                for c in range(len(grid)):
                    clean[c] = res.per_query(c)
            for name, res in run.sets.items():
                key = f"{name} spelling={'on' if spelling else 'off'}"
                rows = []
                for c, cfg in enumerate(grid):
                    m = res.mean_scores(c)
                    row = {
                        "config": cfg.label,
                        "n": len(res.query_ids),
                        "p@10": m["precision@10"],
                        "ndcg@10": m["ndcg@10"],
                    }
                    if "precision@1" in m:
                        row["p@1"] = m["precision@1"]
                    if name.startswith("typo/") and clean:
                        pq = res.per_query(c)
                        base = {
                            qid: qid.rsplit("-", 1)[0]
                            if not qid.endswith("-2-edits")
                            else qid[: -len("-2-edits")]
                            for qid in pq
                        }
                        matched = [(pq[q], clean[c][b]) for q, b in base.items() if b in clean[c]]
                        if matched:
                            row["clean_p@10"] = float(
                                np.mean([b["precision@10"] for _, b in matched])
                            )
                            row["clean_ndcg@10"] = float(
                                np.mean([b["ndcg@10"] for _, b in matched])
                            )
                            row["matched"] = len(matched)
                    rows.append(row)
                report["sets"][key] = rows
    store.close()
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
