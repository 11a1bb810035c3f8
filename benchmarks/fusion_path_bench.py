"""The default text query's stages, side by side for source trees, with the results compared.

The same attribute-phrase and typo queries ("Men Navy Blue Casual Shoes", "Women Blck
Handbags") run through :class:`~clipy_qdrant.search.Searcher` with engine defaults (spelling
correction, weighted fusion of text, image and lexical channels, hubness correction) in four
modes: ``defaults`` (the text as typed: correction, encoding, search, fusion, payloads) and
``vectors`` (the query vectors given: search, fusion and payloads only), each ``cold`` (a
freshly opened store and searcher: nothing read about any product yet) and then ``warm``
(the same queries again on that searcher). Each query's time is split into stages by
wrapping the store's and the retriever's methods (exclusive times): spelling, encode, each
channel's engine query, the scores missing from a channel's list, hubness values, fusion,
payload work and the rest; the engine queries per query and the rounds of channel lists
(the threshold algorithm's deepening) are counted.

Each tree runs in its own child process with the tree first on ``PYTHONPATH``; trees take
turns round after round, so a shared machine's load falls on all of them. The children write
every hit (id, fused and channel scores, payload); the first tree's results are the reference
the others must equal (same ids in the same order, scores within ``--tolerance``).

    python benchmarks/fusion_path_bench.py --store STORE --tree new=. --tree old=/tmp/old-tree \
        [--queries 200] [--rounds 2] [--profile] [--out scratch/fusion-path]
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
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGES = (
    "spelling",
    "lexical query",
    "encode",
    "engine text",
    "engine image",
    "engine lexical",
    "engine batch",
    "channel lists (python)",
    "missing scores: engine",
    "missing scores: vectors",
    "missing scores (python)",
    "hubness",
    "fusion",
    "payload",
    "other",
    "total",
)


# -- queries (parent) -------------------------------------------------------------------------


def _typo(phrase: str, rng: random.Random) -> str:
    """``phrase`` with one edit (delete, swap, replace or insert a letter) in one word of five
    letters or more; unchanged when it has none."""
    words = phrase.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not long:
        return phrase
    i = rng.choice(long)
    w = words[i]
    pos = rng.randrange(1, len(w) - 1)
    kind = rng.choice(("delete", "swap", "replace", "insert"))
    letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
    if kind == "delete":
        w = w[:pos] + w[pos + 1 :]
    elif kind == "swap":
        w = w[:pos] + w[pos + 1] + w[pos] + w[pos + 2 :]
    elif kind == "replace":
        w = w[:pos] + letter + w[pos + 1 :]
    else:
        w = w[:pos] + letter + w[pos:]
    words[i] = w
    return " ".join(words)


def make_queries(store_path: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` queries from the stored products' attributes: half "gender colour type" phrases,
    half such phrases with one typo."""
    from clipy_qdrant.store import open_store

    store = open_store(store_path)
    try:
        phrases = sorted(
            {
                " ".join(str(p.payload[f]) for f in ("gender", "baseColour", "articleType"))
                for p in store.scroll()
                if all(p.payload.get(f) for f in ("gender", "baseColour", "articleType"))
            }
        )
    finally:
        store.close()
    rng = random.Random(seed)
    picked = rng.sample(phrases, min(n, len(phrases)))
    half = len(picked) // 2
    return picked[:half] + [_typo(p, rng) for p in picked[half:]]


# -- one tree (child) ---------------------------------------------------------------------------


class StageTimer:
    """Exclusive time per stage of one query: each wrapped call's time minus the time of the
    wrapped calls inside it, under the name its ``namer`` gives from the enclosing calls."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.context: list[str] = []
        self._nested: list[float] = []

    def wrap(self, obj: Any, attr: str, namer: Callable[[StageTimer, tuple, dict], str]) -> None:
        original = getattr(obj, attr, None)
        if original is None:
            return

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = namer(self, args, kwargs)
            self.calls[name] += 1
            self.context.append(attr)
            self._nested.append(0.0)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.context.pop()
                inner = self._nested.pop()
                self.totals[name] += elapsed - inner
                if self._nested:
                    self._nested[-1] += elapsed

        setattr(obj, attr, wrapper)

    def inside(self, *attrs: str) -> bool:
        return any(a in self.context for a in attrs)


def _engine_name(channel: str) -> Callable[[StageTimer, tuple, dict], str]:
    def namer(timer: StageTimer, args: tuple, kwargs: dict) -> str:
        if timer.inside("component_scores", "missing_scores"):
            return "missing scores: engine"
        using = channel or (args[0] if args else kwargs.get("using", "?"))
        return f"engine {using}"

    return namer


def _retrieve_name(timer: StageTimer, args: tuple, kwargs: dict) -> str:
    if timer.inside("hubness_of"):
        return "hubness"
    if timer.inside("component_scores", "missing_scores"):
        return "missing scores: vectors"
    return "payload"


def _fixed(name: str) -> Callable[[StageTimer, tuple, dict], str]:
    return lambda timer, args, kwargs: name


def instrument(searcher: Any) -> StageTimer:
    timer = StageTimer()
    store, retriever = searcher.store, searcher.retriever
    timer.wrap(store, "search", _engine_name(""))
    timer.wrap(store, "search_lexical", _engine_name("lexical"))
    timer.wrap(store, "search_batch", _fixed("engine batch"))
    timer.wrap(store, "retrieve", _retrieve_name)
    timer.wrap(searcher, "correct", _fixed("spelling"))
    if searcher.lexical is not None:
        timer.wrap(searcher.lexical, "query", _fixed("lexical query"))
    timer.wrap(searcher.encoder, "encode_texts", _fixed("encode"))
    timer.wrap(retriever, "retrieve", _fixed("channel lists (python)"))
    timer.wrap(retriever, "component_scores", _fixed("missing scores (python)"))
    timer.wrap(retriever, "missing_scores", _fixed("missing scores (python)"))
    timer.wrap(retriever, "hubness_of", _fixed("hubness"))
    timer.wrap(retriever, "fuse_weighted", _fixed("fusion"))
    timer.wrap(retriever, "fuse_ranks", _fixed("fusion"))
    timer.wrap(retriever, "hits", _fixed("payload"))
    return timer


def _hit_row(hit: Any) -> list[Any]:
    return [
        hit.product_id,
        hit.score,
        hit.text_score,
        hit.image_score,
        hit.lexical_score,
        hit.image_penalty,
        hit.payload,
    ]


def _searcher(store_path: Path) -> Any:
    from clipy_qdrant.encoders import get_encoder
    from clipy_qdrant.search import Searcher
    from clipy_qdrant.store import open_store

    store = open_store(store_path)
    info = store.encoder_info()
    assert info is not None
    searcher = Searcher(store, get_encoder(info.name))
    # Warm up (spelling corrector, ONNX session, engine) on queries outside the measured set.
    for text in WARMUP:
        searcher.search_page(text, k=10)
    return searcher


#: Queries run before measuring, none of them in the measured set.
WARMUP = ("bluee jeans", "watch for women", "sports shoes black")


def child(store_path: Path, queries_file: Path, out_file: Path, profile: Path | None) -> None:
    """Run every mode over the queries and write stage times and hits to ``out_file``.

    ``cold`` modes run on a freshly opened store and searcher (nothing read about the
    products yet), ``warm`` modes repeat the same queries on the same searcher."""
    import clipy_qdrant

    queries = json.loads(queries_file.read_text(encoding="utf-8"))
    searcher = _searcher(store_path)
    if profile is not None:
        from pyinstrument import Profiler
        from pyinstrument.renderers import ConsoleRenderer

        profiler = Profiler(interval=0.0002)
        profiler.start()
        for _ in range(2):
            for text in queries:
                searcher.search_page(text, k=10)
        profiler.stop()
        session = profiler.last_session
        assert session is not None
        tree = ConsoleRenderer(time="percent_of_total").render(session)
        flat = ConsoleRenderer(flat=True, time="percent_of_total").render(session)
        profile.write_text(tree + "\n\n" + flat, encoding="utf-8")
        searcher.store.close()
        return
    vectors = [searcher.embed(text) for text in queries]
    searcher.store.close()
    report: dict[str, Any] = {
        "module": clipy_qdrant.__file__,
        "stages": {},
        "results": {},
        "rounds": {},
    }
    for mode in ("defaults cold", "defaults warm", "vectors cold", "vectors warm"):
        if mode.endswith("cold"):
            searcher.store.close()
            searcher = _searcher(store_path)
            timer = instrument(searcher)
        typed = mode.startswith("defaults")
        stages: dict[str, list[float]] = {name: [] for name in STAGES}
        results = []
        rounds: list[int] = []
        engine_calls: list[int] = []
        for i in range(len(queries)):
            timer.totals.clear()
            timer.calls.clear()
            start = time.perf_counter()
            if typed:
                hits = searcher.search_page(queries[i], k=10).hits
            else:
                hits = searcher.search_vectors(vectors[i], k=10)
            total = time.perf_counter() - start
            measured = sum(timer.totals.values())
            for name in STAGES:
                if name == "total":
                    value = total
                elif name == "other":
                    value = total - measured
                else:
                    value = timer.totals.get(name, 0.0)
                stages[name].append(value * 1000)
            results.append([_hit_row(h) for h in hits])
            rounds.append(timer.calls["channel lists (python)"])
            engine_calls.append(
                sum(n for name, n in timer.calls.items() if "engine" in name or "vectors" in name)
            )
        report["stages"][mode] = stages
        report["rounds"][mode] = {
            "list_rounds_mean": round(statistics.fmean(rounds), 3),
            "engine_queries_mean": round(statistics.fmean(engine_calls), 3),
        }
        report["results"][mode] = results
    searcher.store.close()
    out_file.write_text(json.dumps(report), encoding="utf-8")


# -- parent -----------------------------------------------------------------------------------


def tree_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH", "")) if p)
    return env


def run_child(
    tree: Path, args: argparse.Namespace, queries: Path, out: Path, profile: bool
) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", str(args.store.resolve())]
    cmd += [str(queries), str(out)]
    if profile:
        cmd.append("--profile")
    done = subprocess.run(cmd, cwd=tree, env=tree_env(tree), capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: child failed: {done.stderr.decode()[-1500:]}")


def pick(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(samples), 3),
        "p95": round(pick(samples, 0.95), 3),
        "p99": round(pick(samples, 0.99), 3),
        "mean": round(statistics.fmean(samples), 3),
    }


def compare(reference: list[list[list[Any]]], other: list[list[list[Any]]], tol: float) -> dict:
    """Queries whose hits differ (ids, order, payloads, or a score by more than ``tol``)."""
    differ, worst = [], 0.0
    for q, (ref_hits, hits) in enumerate(zip(reference, other, strict=True)):
        same = [h[0] for h in ref_hits] == [h[0] for h in hits]
        for a, b in zip(ref_hits, hits, strict=True) if same else ():
            diff = max(abs(x - y) for x, y in zip(a[1:6], b[1:6], strict=True))
            worst = max(worst, diff)
            same = same and diff <= tol and a[6] == b[6]
        if not same:
            differ.append(q)
    return {"queries_differing": differ, "max_score_diff": worst}


def markdown(stats: dict[str, dict[str, dict[str, dict[str, float]]]], labels: list[str]) -> str:
    lines = []
    for mode in ("defaults cold", "defaults warm", "vectors cold", "vectors warm"):
        lines.append(f"\nmode {mode} (ms, p50 / p95 / p99)\n")
        lines.append("| stage | " + " | ".join(labels) + " |")
        lines.append("| --- |" + " --- |" * len(labels))
        for stage in STAGES:
            cells = []
            for label in labels:
                s = stats[label][mode][stage]
                cells.append(f"{s['p50']:.2f} / {s['p95']:.2f} / {s['p99']:.2f}")
            if any(not c.startswith("0.00 / 0.00 / 0.00") for c in cells) or stage == "total":
                lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        store, queries, out = map(Path, sys.argv[2:5])
        profile = out.with_suffix(".profile.txt") if "--profile" in sys.argv else None
        child(store, queries, out, profile)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--tree", action="append", required=True, help="LABEL=DIR, repeatable")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--profile", action="store_true", help="also profile each tree")
    parser.add_argument("--out", type=Path, default=Path("scratch/fusion-path"))
    args = parser.parse_args()
    trees = {label: Path(d).resolve() for label, d in (t.split("=", 1) for t in args.tree)}
    labels = list(trees)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    queries_file = out / "queries.json"
    queries_file.write_text(json.dumps(make_queries(args.store, args.queries)), encoding="utf-8")

    load = [os.getloadavg()[0]]
    samples: dict[str, dict[str, dict[str, list[float]]]] = {label: {} for label in trees}
    results: dict[str, dict[str, Any]] = {}
    engine_work: dict[str, Any] = {}
    for r in range(args.rounds):
        for label, tree in trees.items():
            file = out / f"{label}-{r}.json"
            run_child(tree, args, queries_file, file, profile=False)
            data = json.loads(file.read_text(encoding="utf-8"))
            print(f"round {r} {label}: {data['module']}", file=sys.stderr)
            for mode, stages in data["stages"].items():
                for stage, values in stages.items():
                    samples[label].setdefault(mode, {}).setdefault(stage, []).extend(values)
            results.setdefault(label, data["results"])
            engine_work.setdefault(label, data["rounds"])
            load.append(os.getloadavg()[0])
    if args.profile:
        for label, tree in trees.items():
            run_child(tree, args, queries_file, out / f"{label}-profile.json", profile=True)
    stats = {
        label: {
            mode: {stage: summary(v) for stage, v in stages.items()}
            for mode, stages in modes.items()
        }
        for label, modes in samples.items()
    }
    first = labels[0]
    equality = {
        label: {
            mode: compare(results[first][mode], results[label][mode], args.tolerance)
            for mode in results[first]
        }
        for label in labels[1:]
    }
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average_1min": [round(x, 2) for x in load],
        "queries": args.queries,
        "rounds": args.rounds,
        "stats": stats,
        "equal_to_" + first: equality,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    report["engine_work"] = engine_work
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "stats"}, indent=2))
    print(markdown(stats, labels))


if __name__ == "__main__":
    main()
