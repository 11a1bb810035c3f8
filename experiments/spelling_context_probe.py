"""Probe context-aware spelling correction on validation typos (training-split products).

:class:`clipy_qdrant.spelling.SpellingCorrector` ranks a misspelt word's candidates by the
query's other catalog words when its vocabulary holds word-pair counts (the module doc gives
the score), and by edit distance then document frequency when it holds none. This probe
scores both on the same queries, and the context ranking for several edit penalties and
smoothing masses.

Queries: clipy eval's typo generator (:func:`clipy_qdrant.eval.shopper_queries.typo_queries`)
on attribute phrases about TRAINING products (``int(id) % 5 != 0``; held-out products are
never used), for several seeds. A query is restored when its corrected text equals the clean
phrase. Also counted: clean phrases and product names that a variant changes (must stay 0),
and the CPU time of one ``correct()`` call. The vocabulary is built from the default product
texts (name, gender, usage, season, articleType, baseColour) of the whole catalog, as ingest
builds it from the store.

    python experiments/spelling_context_probe.py [--catalog PATH] [--seeds 0 1 2]
        [--penalty 6] [--smoothing 1000] [--json experiments-out/spelling_context.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_spelling import DEFAULT_CATALOG, _products, _text
from clipy_qdrant.spelling import (
    CONTEXT_EDIT_PENALTY,
    CONTEXT_SMOOTHING,
    SpellingCorrector,
    Vocabulary,
)
from clipy_qdrant.split import is_heldout


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    from clipy_qdrant.eval.queries import attribute_queries, known_item_queries
    from clipy_qdrant.eval.shopper_queries import typo_queries

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--penalty", type=float, nargs="+", default=[CONTEXT_EDIT_PENALTY])
    parser.add_argument("--smoothing", type=float, nargs="+", default=[CONTEXT_SMOOTHING])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    products = _products(args.catalog)
    texts = [_text(p) for p in products]
    started = time.perf_counter()
    vocabulary = Vocabulary.from_texts(texts)
    vocabulary_s = time.perf_counter() - started
    without_pairs = Vocabulary(vocabulary.frequencies, vocabulary.documents, vocabulary.tokens)

    def training(pid: str) -> bool:
        return not is_heldout(pid)

    cases: list[tuple[str, str, str]] = []  # (kind, typo text, clean text)
    clean_phrases: set[str] = set()
    for seed in args.seeds:
        clean = {
            q.id: q.text or ""
            for q in attribute_queries(products, n=5000, seed=seed, heldout=training)
        }
        clean_phrases.update(clean.values())
        for q in typo_queries(products, n=5000, seed=seed, heldout=training):
            base = q.id.removesuffix("-" + q.set.split("/", 1)[1])
            kind = "2-edits" if q.set.endswith("2-edits") else "1-edit"
            cases.append((kind, q.text or "", clean[base]))
    names = [q.text or "" for q in known_item_queries(products, n=3000, heldout=training)]

    variants: dict[str, SpellingCorrector] = {"frequency": SpellingCorrector(without_pairs)}
    for penalty in args.penalty:
        for smoothing in args.smoothing:
            variants[f"context penalty={penalty:g} smoothing={smoothing:g}"] = SpellingCorrector(
                vocabulary, edit_penalty=penalty, smoothing=smoothing
            )
    result: dict[str, Any] = {
        "products": len(products),
        "vocabulary_words": len(vocabulary),
        "word_pairs": len(vocabulary.pairs),
        "vocabulary_build_s": round(vocabulary_s, 2),
        "vocabulary_json_kib": round(len(json.dumps(vocabulary.to_json())) / 1024),
        "queries": dict(Counter(kind for kind, _, _ in cases)),
        "variants": {},
    }
    for name, corrector in variants.items():
        right: Counter[str] = Counter()
        times: list[float] = []
        for kind, typo, clean_text in cases:
            t0 = time.thread_time_ns()
            fixed = corrector.correct(typo).corrected
            times.append((time.thread_time_ns() - t0) / 1000)
            right[kind] += fixed.lower() == clean_text.lower()
        result["variants"][name] = {
            "accuracy": {k: round(right[k] / n, 4) for k, n in result["queries"].items()},
            "right": dict(right),
            "changed_clean_phrases": [
                sum(corrector.correct(t).changed for t in clean_phrases),
                len(clean_phrases),
            ],
            "changed_names": [sum(corrector.correct(t).changed for t in names), len(names)],
            "cpu_us_p50": round(statistics.median(times), 1),
            "cpu_us_p99": round(_percentile(times, 0.99), 1),
        }
        print(name, json.dumps(result["variants"][name]), file=sys.stderr)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
