"""``python -m benchmarks run``: every benchmark in one run, one markdown table, one JSON file.

Full mode uses the whole catalog (ingesting it into ``--store`` when that is absent or
empty); ``--quick`` ingests the catalog's first 5,000 products into a temporary folder and
exits 1 when any measured configuration's recall@10 against the exact oracle is below 0.99.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clipy_qdrant.config import Settings, apply_offline_environment

apply_offline_environment()

from benchmarks.common import machine, markdown_table, ms, ratio  # noqa: E402

QUICK_PRODUCTS = 5000
RECALL_FLOOR = 0.99


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the benchmarks")
    run.add_argument("--quick", action="store_true", help="5,000-product slice, CI-sized")
    run.add_argument(
        "--store",
        type=Path,
        default=None,
        help="store to measure; ingested first when absent or empty (quick mode: the slice, "
        "default a temporary folder; full mode: the catalog, default OUT/store)",
    )
    run.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    run.add_argument("--catalog", type=Path, default=None, help="catalog (default: settings)")
    run.add_argument("--encoders", action="store_true", help="encoder throughput in quick mode")
    run.add_argument("--queries", type=int, default=None, help="queries (quick 50, full 200)")
    run.add_argument(
        "--memory-queries",
        type=int,
        default=None,
        help="queries on :memory: (quick 10, full 20; 0 leaves it out)",
    )
    run.add_argument("--encoder-products", type=int, default=500)
    run.add_argument("--cold-runs", type=int, default=5)
    run.add_argument("--k", type=int, default=10)
    run.add_argument(
        "--cases",
        default=None,
        help="comma-separated parts of search case names (e.g. 'RRF,DBSF'): measure only "
        "those cases, without the encoder and cold-start rows",
    )
    run.add_argument("--seed", type=int, default=0)
    return parser


def _store_is_empty(path: Path) -> bool:
    from clipy_qdrant.store import open_store

    if not path.exists() or not any(path.iterdir()):
        return True
    store = open_store(path)
    try:
        return store.encoder_info() is None or store.count() == 0
    finally:
        store.close()


def run(args: argparse.Namespace) -> int:
    from benchmarks.encoder_bench import run_encoders
    from benchmarks.ingest_bench import run_ingest
    from benchmarks.latency_bench import catalog_images, cold_start, encode_queries, end_to_end
    from benchmarks.oracle import StoredVectors
    from benchmarks.search_bench import query_phrases, run_search, select_cases
    from clipy_qdrant.encoders import get_encoder
    from clipy_qdrant.search import Searcher
    from clipy_qdrant.store import open_store

    only = [p.strip() for p in args.cases.split(",") if p.strip()] if args.cases else None
    select_cases(only)  # an unknown case name fails before any work
    started = time.perf_counter()
    catalog = args.catalog or Settings().catalog
    args.out.mkdir(parents=True, exist_ok=True)
    n_queries = args.queries or (50 if args.quick else 200)
    memory_queries = (
        (10 if args.quick else 20) if args.memory_queries is None else args.memory_queries
    )
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "catalog": str(catalog),
        "k": args.k,
        "queries": n_queries,
    }
    with tempfile.TemporaryDirectory(prefix="clipy-bench-") as tmp:
        work = Path(tmp)
        limit = QUICK_PRODUCTS if args.quick else None
        if args.store is not None:
            store_path = args.store
        else:
            store_path = work / "store" if args.quick else args.out / "store"
        if _store_is_empty(store_path):
            result["ingest"] = run_ingest(catalog, store_path, limit, work / "ingest-report.json")
        else:
            result["ingest"] = {"skipped": f"store {store_path} given and not empty"}

        store = open_store(store_path)
        info = store.encoder_info()
        assert info is not None
        encoder = get_encoder(info.name)
        searcher = Searcher(store, encoder)
        vectors = StoredVectors.from_store(store)
        result["products"] = len(vectors.ids)
        result["encoder"] = {"name": info.name, "dim": info.dim, "hubness_beta": searcher.hubness}
        texts = query_phrases(vectors, n_queries, args.seed)
        images = catalog_images(catalog, len(texts), args.seed)
        encode_stats, text_qv, image_vecs = encode_queries(searcher, texts, images)
        result["latency"] = encode_stats
        result["search"] = run_search(
            store,
            searcher,
            vectors,
            text_qv,
            image_vecs,
            k=args.k,
            memory_queries=memory_queries,
            skip_memory=memory_queries == 0,
            only=only,
        )
        result["latency"].update(end_to_end(searcher, texts, images, args.k))
        store.close()
        if only:
            result["cases"] = only
            result["cold_start"] = {"error": "not measured (--cases)"}
        else:
            result["cold_start"] = cold_start(store_path, texts[0], args.cold_runs)
        if not only and (not args.quick or args.encoders):
            result["encoders"] = run_encoders(catalog, args.encoder_products, work)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"]["load_avg_end"] = machine()["load_avg"]
    failures = recall_failures(result)
    result["recall_failures"] = failures
    table = render(result)
    print(table)
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(table + "\n")
    print(f"wrote {args.out / 'results.json'} ({result['seconds']} s)", file=sys.stderr)
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


def recall_failures(result: dict[str, Any]) -> list[str]:
    """Every (case, system) whose recall@10 is below the floor."""
    out = []
    for row in result["search"]["cases"]:
        for system in ("edge", "memory", "faiss"):
            recall = row.get(system, {}).get("recall")
            if recall is not None and recall < RECALL_FLOOR:
                out.append(f"{row['case']} on {system}: recall@10 {recall} < {RECALL_FLOOR}")
    return out


def _search_cell(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    cell = ms(stats)
    return f"{cell}, R {stats['recall']:.4f}" if "recall" in stats else cell


def render(result: dict[str, Any]) -> str:
    """The one table: search cases side by side, then latency, ingest, encoders, cold start."""
    header = [
        "measure",
        "clipy edge",
        "clipy :memory:",
        "FAISS flat (1 thread)",
        "edge ×faster vs :memory: / vs FAISS",
    ]
    rows: list[list[str]] = []
    for row in result["search"]["cases"]:
        if "skipped" in row:
            rows.append([f"search: {row['case']}", row["skipped"], "", "", ""])
            continue
        edge, mem, fa = row.get("edge"), row.get("memory"), row.get("faiss")
        rows.append(
            [
                f"search: {row['case']} (p50 / p99, recall@10)",
                _search_cell(edge),
                _search_cell(mem),
                _search_cell(fa),
                f"{ratio(mem, edge)} / {ratio(fa, edge)}" if fa or mem else "",
            ]
        )
    lat = result["latency"]
    for key, label in (
        ("encode_text", "encode text query"),
        ("encode_image_with_decode", "encode image query (decode included)"),
        ("end_to_end_text", "end to end text query (encode + weighted 0.5/0.5)"),
        ("end_to_end_image", "end to end image query (decode + encode + weighted)"),
    ):
        keys = ("p50_ms", "p95_ms", "p99_ms")
        rows.append([f"{label} (p50 / p95 / p99)", ms(lat.get(key), keys), "", "", ""])
    ing = result.get("ingest", {})
    if "stages" in ing:
        st = ing["stages"]
        size = ing["store"]
        rows += [
            [
                f"ingest: {ing['products']:,} products, wall",
                f"{ing['wall_s']:.1f} s ({ing['products_per_s_wall']} products/s)",
                "",
                "",
                "",
            ],
            [
                "ingest: embed + write stage",
                f"{st['embed_and_write_s']:.1f} s "
                f"({st['embed_and_write_products_per_s']} products/s)",
                "",
                "",
                "",
            ],
            [
                "ingest: hubness / HNSW build / start + model load",
                f"{st['hubness_s']:.1f} s / {st['hnsw_build_s']:.1f} s / "
                f"{ing['start_and_model_load_s']:.1f} s",
                "",
                "",
                "",
            ],
            ["ingest: peak RSS of the ingest process", f"{ing['peak_rss_mb']:.0f} MB", "", "", ""],
            [
                "store on disk (apparent / allocated)",
                f"{size['apparent_mb']} MB / {size['allocated_mb']} MB",
                "",
                "",
                "",
            ],
        ]
    elif ing:
        rows.append(["ingest", ing.get("skipped", ""), "", "", ""])
    for name, enc in result.get("encoders", {}).items():
        rows.append(
            [
                f"encoder {name} ({enc['products']} products, batch 64)",
                f"{enc['images_per_s']} images/s, {enc['texts_per_s']} texts/s",
                "",
                "",
                "",
            ]
        )
    cold = result.get("cold_start", {})
    rows.append(
        [
            f"cold `clipy search … --json` (median of {cold.get('runs', '?')})",
            f"{cold['median_s']} s" if "median_s" in cold else cold.get("error", ""),
            "",
            "",
            "",
        ]
    )
    notes = "; ".join(result["search"].get("notes", []))
    title = (
        f"clipy benchmarks ({result['mode']} mode): {result.get('products', 0):,} products, "
        f"{result['queries']} queries, k={result['k']}, {result['machine']['cpus']} CPUs, "
        f"load average {result['machine']['load_avg'][0]} at start, "
        f"{result['machine']['load_avg_end'][0]} at end, {result['machine']['utc']}, "
        f"{result['seconds']} s"
    )
    if result.get("cases"):
        title += f", search cases matching {', '.join(result['cases'])} only"
    return f"{title}\n\n{markdown_table(header, rows)}\n\n{notes}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
