"""Spelling correction on the catalog vocabulary: build time and memory, per-query latency,
and how often the typo query sets get their clean phrase back.

    python benchmarks/bench_spelling.py [--catalog PATH] [--repeat 50] [--json out.json]

The vocabulary is built from the default product text (name, gender, usage, season,
articleType, baseColour), as ingest writes it. Latency is wall time and thread CPU time per
``correct()`` call (CPU time leaves out time the process waits for a core on a shared
machine). Accuracy: a typo query is restored when its corrected text equals the clean
phrase of the ``attribute`` set; clean attribute phrases and known-item names count the
queries the corrector changes (ideally none).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

DEFAULT_CATALOG = (
    Path(__file__).resolve().parents[2] / "shared/datasets/fashion-product-images-small"
)
ATTRIBUTES = ("gender", "usage", "season", "articleType", "baseColour")
COLUMNS = ("id", "productDisplayName", "masterCategory", "subCategory", *ATTRIBUTES)


def _products(catalog: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    files = sorted(catalog.rglob("*.parquet")) if catalog.is_dir() else [catalog]
    rows: list[dict[str, Any]] = []
    for file in files:
        rows.extend(pq.read_table(file, columns=list(COLUMNS)).to_pylist())
    return [
        {
            "product_id": str(r["id"]),
            **{k: v for k, v in r.items() if k != "id" and v not in (None, "")},
        }
        for r in rows
    ]


def _text(p: dict[str, Any]) -> str:
    attrs = " ".join(str(p[a]) for a in ATTRIBUTES if p.get(a))
    name = str(p.get("productDisplayName", ""))
    return f"{name}, {attrs}" if attrs else name


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    from clipy_qdrant.eval.catalog_queries import attribute_queries, known_item_queries
    from clipy_qdrant.eval.shopper_queries import typo_queries
    from clipy_qdrant.lexical import term_id
    from clipy_qdrant.spelling import SpellingCorrector, Vocabulary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    products = _products(args.catalog)
    texts = [_text(p) for p in products]
    start = time.perf_counter()
    vocabulary = Vocabulary.from_texts(texts)
    vocab_s = time.perf_counter() - start
    tracemalloc.start()
    start = time.perf_counter()
    corrector = SpellingCorrector(vocabulary)
    build_s = time.perf_counter() - start
    memory_mib = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    start = time.perf_counter()
    corrector = SpellingCorrector(vocabulary)  # timed again without tracemalloc's overhead
    build_s = time.perf_counter() - start
    json_kib = len(json.dumps(vocabulary.to_json())) / 1024
    collisions = len(vocabulary) - len({term_id(w) for w in vocabulary.frequencies})

    clean = {q.id: q.text or "" for q in attribute_queries(products)}
    typos = typo_queries(products)
    restored: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for q in typos:
        base = q.id.removesuffix("-" + q.set.split("/", 1)[1])
        fixed = corrector.correct(q.text or "").corrected
        restored[q.set][0] += fixed.lower() == clean[base].lower()
        restored[q.set][1] += 1
    names = [q.text or "" for q in known_item_queries(products, n=2000)]
    changed_clean = sum(corrector.correct(t).changed for t in clean.values())
    changed_names = sum(corrector.correct(t).changed for t in names)

    wall: list[float] = []
    cpu: list[float] = []
    queries = [q.text or "" for q in typos] + list(clean.values())
    for _ in range(args.repeat):
        for text in queries[:200]:
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            corrector.correct(text)
            cpu.append((time.thread_time_ns() - c0) / 1000)
            wall.append((time.perf_counter_ns() - w0) / 1000)

    result = {
        "products": len(products),
        "vocabulary_words": len(vocabulary),
        "avg_len": vocabulary.avg_len,
        "vocabulary_build_s": vocab_s,
        "corrector_build_s": build_s,
        "corrector_memory_mib": memory_mib,
        "vocabulary_json_kib": json_kib,
        "term_id_collisions": collisions,
        "latency_us": {
            "calls": len(wall),
            "wall_p50": _percentile(wall, 0.5),
            "wall_p99": _percentile(wall, 0.99),
            "cpu_p50": _percentile(cpu, 0.5),
            "cpu_p99": _percentile(cpu, 0.99),
        },
        "restored": {
            s: {"restored": r, "queries": n, "rate": r / n}
            for s, (r, n) in sorted(restored.items())
        },
        "changed_clean_attribute_phrases": [changed_clean, len(clean)],
        "changed_known_item_names": [changed_names, len(names)],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
