"""Probe weighted search on the fused vector against the channel lists, on one ingested store
that holds the fused vector (``clipy_qdrant/store/fused.py``): the same query vectors searched
by both paths, both scored against the exact top-k.

The query texts are the load script's (``benchmarks/load.py``: names and attribute phrases,
as :mod:`experiments.deepening_probe` takes them), embedded once with the server's settings
(spelling, hubness gate; ``CLIPY_QUERY_WORDS`` from the environment). Each is searched with
the default fusion (weighted 0.5 / 0.5 / lexical 0.5), ``k`` 24, under each ``--filters``
entry, by (``--kind`` text+image or like: those queries instead, :data:`KINDS`):

- ``channels``: the text, image and lexical lists with the threshold algorithm (the store's
  ``has_fused`` reported false for the call);
- ``fused xB``: the fused vector's list (and the lexical list), walking ``B`` times the
  store's beam under a filter or for a query with two different halves
  (``clipy_qdrant.retrieval.FUSED_WIDE_BEAM``), for each ``--beams`` value.

The exact top-k scans every product under the filter: one exact query on the fused vector
(the dense part of each product's score) and one lexical query for every product holding a
query word. Reported per path and filter: lists equal to the exact one, the share of the
exact hits found, lists missing a product that scores more than the path's last hit, and the
CPU per search (``time.process_time`` around ``search_vectors_page``; the encoding is not
counted), the paths alternating query by query.

    PYTHONPATH=$PWD python experiments/fused_search_probe.py --store STORE [--texts 300]
        [--beams 1 2] [--kind text|text+image|like] [--filters ''] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import clipy_qdrant.retrieval as retrieval
from clipy_qdrant.config import Settings
from clipy_qdrant.filters import parse_filter
from clipy_qdrant.fusion import FusionConfig, top_k
from clipy_qdrant.search import QueryVectors, Searcher
from clipy_qdrant.store.base import IMAGE, TEXT
from clipy_qdrant.store.fused import FUSED, fused_query
from ingest.cli.shell import open_searcher

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.deepening_probe import percentile, query_texts

K = 24
#: Query kinds: a text (its vector on both channels, hubness-corrected as the server does);
#: that text with the image vector of a product drawn at random (a text+image query, whose
#: halves describe two things); a product's own text and image vectors (more like this).
KINDS = ("text", "text+image", "like")


def exact_top(
    searcher: Searcher, query: QueryVectors, filters: list[str]
) -> list[tuple[str, float]]:
    """The exact weighted top-k of the default fusion under ``filters``."""
    store, cfg = searcher.store, FusionConfig()
    flt = parse_filter(filters) if filters else None
    c_q = query.image_hubness if searcher.hubness_info is not None else 0.0
    vector = fused_query(query.text, query.image, cfg.w_text, cfg.w_image, c_q)
    everyone = store.count(flt)
    dense = {
        p.product_id: p.score
        for p in store.search(FUSED, vector, everyone, flt, with_payload=False, exact=True)
    }
    lexical: dict[str, float] = {}
    lq = query.lexical
    if lq is not None and len(lq.vector) > 0:
        for p in store.search_lexical(lq.vector, everyone, flt):
            lexical[p.product_id] = lq.normalise(p.score)
    return top_k({pid: s + cfg.w_lexical * lexical.get(pid, 0.0) for pid, s in dense.items()}, K)


def probe_queries(searcher: Searcher, kind: str, n: int, seed: int) -> list[QueryVectors]:
    """``n`` queries of ``kind`` (see :data:`KINDS`)."""
    store = searcher.store
    if kind == "text":
        return [searcher.embed(t) for t in query_texts(store, n, seed)]
    ids = [p.product_id for p in store.scroll(with_payload=False)]
    drawn = random.Random(seed).sample(ids, n)
    stored = {p.product_id: p.vectors for p in store.retrieve(drawn, with_vectors=True)}
    if kind == "like":
        return [QueryVectors(text=stored[p][TEXT], image=stored[p][IMAGE]) for p in drawn]
    texts = query_texts(store, n, seed)
    embedded = [searcher.embed(t) for t in texts]
    return [
        QueryVectors(text=e.text, image=stored[p][IMAGE], lexical=e.lexical)
        for e, p in zip(embedded, drawn, strict=True)
    ]


def compare(
    got: list[tuple[str, float]], want: list[tuple[str, float]]
) -> tuple[bool, float, bool]:
    """(same ids in the same order, share of the exact hits found, a better product missed)."""
    same = [p for p, _ in got] == [p for p, _ in want]
    ids = {p for p, _ in got}
    found = len(ids & {p for p, _ in want}) / max(1, len(want))
    last = got[-1][1] if got else float("-inf")
    missed = any(p not in ids and s > last + 1e-5 for p, s in want)
    return same, found, missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--filters",
        nargs="+",
        default=["", "gender=Men", "year>=2012"],
        help="filters, one per search ('' for none; several conditions joined by '&')",
    )
    parser.add_argument("--kind", choices=KINDS, default="text")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    store, searcher = open_searcher(Settings(store=args.store))
    rows: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    try:
        if not store.has_fused():
            raise SystemExit(f"store {args.store} has no fused vector")
        searcher.preload()
        has_fused = store.has_fused
        queries = probe_queries(searcher, args.kind, args.texts, args.seed)
        paths = ["channels", *(f"fused x{b}" for b in args.beams)]
        for query in queries:
            for raw in args.filters:
                filters = [f for f in raw.split("&") if f]
                want = exact_top(searcher, query, filters)
                for path in paths:
                    if path == "channels":
                        store.has_fused = lambda: False  # type: ignore[method-assign]
                    else:
                        store.has_fused = has_fused  # type: ignore[method-assign]
                        retrieval.FUSED_WIDE_BEAM = int(path.split("x")[1])
                    start = time.process_time()
                    hits = searcher.search_vectors_page(query, filters=filters or None, k=K).hits
                    ms = (time.process_time() - start) * 1000
                    same, found, missed = compare([(h.product_id, h.score) for h in hits], want)
                    row = rows[f"{path} | {raw or 'none'}"]
                    row["ms"].append(ms)
                    row["same"].append(same)
                    row["found"].append(found)
                    row["missed"].append(missed)
        store.has_fused = has_fused  # type: ignore[method-assign]
    finally:
        store.close()
    result = {
        key: {
            "queries": len(r["ms"]),
            "exact_lists": sum(r["same"]),
            "found": statistics.mean(r["found"]),
            "missed_better": sum(r["missed"]),
            "cpu_mean_ms": statistics.mean(r["ms"]),
            "cpu_p50_ms": percentile(r["ms"], 0.5),
            "cpu_p99_ms": percentile(r["ms"], 0.99),
        }
        for key, r in rows.items()
    }
    print(
        "| path | filter | lists equal to the exact | exact hits found | a better product missed | CPU ms mean / p50 / p99 |"
    )
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for key, r in sorted(result.items()):
        path, _, flt = key.partition(" | ")
        print(
            f"| {path} | {flt} | {r['exact_lists']} / {r['queries']} | {r['found']:.4f} | "
            f"{r['missed_better']} | {r['cpu_mean_ms']:.1f} / {r['cpu_p50_ms']:.1f} / "
            f"{r['cpu_p99_ms']:.1f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
