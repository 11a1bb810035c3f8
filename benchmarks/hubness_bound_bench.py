"""Hubness-corrected weighted search, side by side for source trees: latency, rounds and depth.

Text queries of four words or more (so the query gate is 1): product display names, or with
``--kind phrases`` attribute phrases ("Men Black Casual Shoes"), encoded once; each tree
then runs them with the query vectors given through
:meth:`~clipy_qdrant.search.Searcher.search_vectors` in three settings: ``image corrected``
(weighted 0/1, lexical off), ``weighted 0.5/0.5 corrected`` (lexical off) and ``default``
(the engine's default fusion, lexical channel on), the hubness correction at the encoder's
default strength. Per query it records the time, the rounds of channel lists (the threshold
algorithm's deepening: each round of a tree that deepens every list at once, or each step of
one that deepens one list at a time, :meth:`~clipy_qdrant.retrieval.Retriever.deepen`,
counted after the first lists), the deepest list and whether a low-hubness image list was
searched (:meth:`~clipy_qdrant.retrieval.Retriever.with_low_hub`; a tree without it never
does). Each tree runs in its own child process with the tree first on ``PYTHONPATH``; trees
take turns round after round; the first tree's hits are the reference the others must equal
(ids in order, scores within ``--tolerance``).

    python benchmarks/hubness_bound_bench.py --store STORE --tree new=. --tree old=DIR \
        [--queries 300] [--kind names|phrases] [--rounds 2] [--out scratch/hubness-bound]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SETTINGS = ("image corrected", "weighted 0.5/0.5 corrected", "default")


#: Payload fields of an attribute phrase ("Men Black Casual Shoes"): four words or more.
PHRASE_FIELDS = ("gender", "baseColour", "usage", "articleType")


def make_queries(store_path: Path, n: int, kind: str = "names", seed: int = 0) -> list[str]:
    """``n`` distinct queries of four words or more: product display names (``names``) or
    attribute phrases (``phrases``) of the stored products."""
    from clipy_qdrant.store import open_store

    def text(payload: dict[str, Any]) -> str:
        if kind == "names":
            return str(payload.get("productDisplayName", ""))
        values = [payload.get(f) for f in PHRASE_FIELDS]
        return " ".join(str(v) for v in values) if all(values) else ""

    store = open_store(store_path)
    try:
        found = sorted({t for p in store.scroll() if len((t := text(p.payload)).split()) >= 4})
    finally:
        store.close()
    return random.Random(seed).sample(found, min(n, len(found)))


def child(store_path: Path, queries_file: Path, out_file: Path) -> None:
    """Run the settings over the queries; write times, rounds, depths and hits."""
    from clipy_qdrant.encoders import get_encoder
    from clipy_qdrant.fusion import FusionConfig
    from clipy_qdrant.search import Searcher
    from clipy_qdrant.store import open_store

    texts = json.loads(queries_file.read_text(encoding="utf-8"))
    store = open_store(store_path)
    info = store.encoder_info()
    assert info is not None
    searcher = Searcher(store, get_encoder(info.name))
    queries = [searcher.embed(t) for t in texts]
    assert all(q.image_hubness > 0 for q in queries)
    retriever = searcher.retriever
    depths: list[int] = []
    original = retriever.retrieve

    def deepest_list(channels: Any) -> int:
        """The deepest list of a Channels (one depth for all, or one per channel)."""
        return max(channels.depths.values()) if hasattr(channels, "depths") else channels.depth

    def counted(query: Any, flt: Any, depth: Any, channels: Any, **kwargs: Any) -> Any:
        found = original(query, flt, depth, channels, **kwargs)
        depths.append(deepest_list(found))
        return found

    retriever.retrieve = counted  # type: ignore[method-assign]
    deepen = getattr(retriever, "deepen", None)
    if deepen is not None:

        def counted_deepen(query: Any, flt: Any, channels: Any, cfg: Any) -> Any:
            found = deepen(query, flt, channels, cfg)
            depths.append(deepest_list(found))
            return found

        retriever.deepen = counted_deepen
    lows: list[int] = []
    with_low = getattr(retriever, "with_low_hub", None)
    if with_low is not None:

        def counted_low(query: Any, flt: Any, channels: Any) -> Any:
            lows.append(deepest_list(channels))
            return with_low(query, flt, channels)

        retriever.with_low_hub = counted_low
    fusions = {
        "image corrected": FusionConfig("weighted", 0.0, 1.0, w_lexical=0.0),
        "weighted 0.5/0.5 corrected": FusionConfig("weighted", 0.5, 0.5, w_lexical=0.0),
        "default": None,
    }
    for q in queries[:5]:  # warm-up
        searcher.search_vectors(q, k=10)
    report: dict[str, Any] = {}
    for name in SETTINGS:
        times, rounds, deepest, low_lists, hits = [], [], [], [], []
        for q in queries:
            depths.clear()
            lows.clear()
            start = time.perf_counter()
            found = searcher.search_vectors(q, k=10, fusion=fusions[name])
            times.append((time.perf_counter() - start) * 1000)
            rounds.append(len(depths))
            deepest.append(max(depths))
            low_lists.append(len(lows))
            hits.append([[h.product_id, h.score] for h in found])
        report[name] = {
            "ms": times,
            "rounds": rounds,
            "depth": deepest,
            "low": low_lists,
            "hits": hits,
        }
    store.close()
    out_file.write_text(json.dumps(report), encoding="utf-8")


def pick(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(*map(Path, sys.argv[2:5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--tree", action="append", required=True, help="LABEL=DIR, repeatable")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--kind", choices=("names", "phrases"), default="names")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--out", type=Path, default=Path("scratch/hubness-bound"))
    args = parser.parse_args()
    trees = {label: Path(d).resolve() for label, d in (t.split("=", 1) for t in args.tree)}
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    queries_file = out / "queries.json"
    queries_file.write_text(
        json.dumps(make_queries(args.store, args.queries, args.kind)), encoding="utf-8"
    )
    load = [os.getloadavg()[0]]
    data: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    for r in range(args.rounds):
        for label, tree in trees.items():
            file = out / f"{label}-{r}.json"
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(tree), env.get("PYTHONPATH", "")) if p
            )
            cmd = [sys.executable, str(Path(__file__).resolve()), "child"]
            cmd += [str(args.store.resolve()), str(queries_file), str(file)]
            done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{tree}: child failed: {done.stderr.decode()[-1500:]}")
            data[label].append(json.loads(file.read_text(encoding="utf-8")))
            load.append(os.getloadavg()[0])
    labels = list(trees)
    lines = [
        "| setting | tree | p50 ms | p95 ms | p99 ms | rounds mean / max | depth mean / max "
        "| queries with a low-hubness list |"
    ]
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    equal: dict[str, dict[str, list[int]]] = {}
    for name in SETTINGS:
        for label in labels:
            ms = [t for run in data[label] for t in run[name]["ms"]]
            rounds = data[label][0][name]["rounds"]
            depth = data[label][0][name]["depth"]
            low = sum(1 for n in data[label][0][name]["low"] if n)
            lines.append(
                f"| {name} | {label} | {statistics.median(ms):.2f} | {pick(ms, 0.95):.2f} | "
                f"{pick(ms, 0.99):.2f} | {statistics.fmean(rounds):.2f} / {max(rounds)} | "
                f"{statistics.fmean(depth):.0f} / {max(depth)} | {low} / {len(depth)} |"
            )
            ref = data[labels[0]][0][name]["hits"]
            got = data[label][0][name]["hits"]
            differ = [
                i
                for i, (a, b) in enumerate(zip(ref, got, strict=True))
                if [h[0] for h in a] != [h[0] for h in b]
                or any(abs(x[1] - y[1]) > args.tolerance for x, y in zip(a, b, strict=True))
            ]
            equal.setdefault(label, {})[name] = differ
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average_1min": [round(x, 2) for x in load],
        "queries": args.queries,
        "kind": args.kind,
        "rounds": args.rounds,
        "queries_differing_from_" + labels[0]: equal,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
