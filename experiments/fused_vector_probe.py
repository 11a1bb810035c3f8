"""Probe one fused named vector for weighted fusion: a single ANN query instead of two
channel searches, a fill-in ``retrieve`` and the threshold algorithm's deepening.

clipy's weighted score of product p for a text query (``clipy_qdrant/search.py``,
``clipy_qdrant/hubness.py``) is

    w_text * cos(q_t, t_p) + w_image * (cos(q_i, i_p) - c_q * r_p)

with unit ``t_p``, ``i_p`` (the stored ``text`` / ``image`` vectors), the stored hubness
``r_p`` and the query's correction weight ``c_q``. With ``f_p = [t_p ; i_p ; r_p]`` (length
2d + 1) stored under DOT distance and the query ``[w_text q_t ; w_image q_i ; -w_image c_q]``
(unit ``q_t``, ``q_i``), the inner product is exactly that score, for any weights chosen at
query time. This script builds such a vector in a qdrant-edge shard of its own (qdrant_edge
directly, not clipy's store), from the vectors and hubness values of an ingested clipy store,
HNSW-indexed, and measures latency and recall@10 against the exact weighted oracle at every
weight of the grid, with and without a filter, for float32 / float16 storage and int8 scalar
quantization with rescoring, over several ``hnsw_ef``.

    PYTHONPATH=$PWD python experiments/fused_vector_probe.py --store STORE [--queries 100]
        [--variants float32 float16 int8] [--ef 64 128 256] [--broad-filter]
        [--hub-scale 0.1] [--quantile 1.0] [--oversampling 4]

``--broad-filter`` filters on gender alone (a subset the engine searches through the graph
rather than by scanning it); ``--hub-scale`` stores ``s * r`` and queries ``-w_image c / s``
(the same product); ``--quantile`` / ``--oversampling`` set int8 quantization and its
rescoring. Prints a markdown table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipy_qdrant.config import apply_offline_environment

apply_offline_environment()

from benchmarks.common import markdown_table, percentiles, time_each  # noqa: E402
from benchmarks.oracle import ExactOracle, StoredVectors  # noqa: E402
from benchmarks.search_bench import filter_predicate, query_phrases  # noqa: E402
from clipy_qdrant.fusion import FusionConfig  # noqa: E402

FUSED = "fused"
GRID = [round(0.1 * i, 1) for i in range(11)]
#: Exact fused scores per (w_text, filtered, query), shared by every variant and ef.
EXACT_CACHE: dict[tuple[float, bool, int], Any] = {}


#: The stored hubness coordinate is ``HUB_SCALE * r`` and the query's ``-w_image c / HUB_SCALE``
#: (the product is unchanged). A scale below 1 keeps ``r`` (0.1-0.5) inside the value range
#: of the unit vectors' components, which int8 scalar quantization (clipped at a quantile of
#: all values) otherwise cuts off.
HUB_SCALE = [1.0]
#: Quantile of all vector values that int8 scalar quantization maps to its range ends.
QUANTILE = [0.99]


def fused_rows(v: StoredVectors) -> np.ndarray:
    """``[t ; i ; s * r]`` per product (unit ``t``, ``i``), float32."""
    return np.hstack([v.text, v.image, HUB_SCALE[0] * v.hubness[:, None]]).astype(np.float32)


def fused_query(
    qt: np.ndarray, qi: np.ndarray, c: float, w_text: float, w_image: float
) -> list[float]:
    return (
        np.concatenate([w_text * qt, w_image * qi, [-w_image * c / HUB_SCALE[0]]])
        .astype(np.float32)
        .tolist()
    )


def build_shard(
    path: Path, v: StoredVectors, variant: str, m: int, ef_construct: int, full_scan_kb: int
) -> tuple[Any, dict[str, float]]:
    """A shard with the one fused DOT vector (``variant``: float32 | float16 | int8), payload
    indexes on ``gender`` / ``year``, HNSW built; returns it and its build times."""
    import qdrant_edge as qe

    datatype = (
        qe.VectorStorageDatatype.Float16
        if variant == "float16"
        else qe.VectorStorageDatatype.Float32
    )
    quant = (
        qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=QUANTILE[0], always_ram=True)
        if variant == "int8"
        else None
    )
    dim = 2 * v.text.shape[1] + 1
    config = qe.EdgeConfig(
        vectors={
            FUSED: qe.EdgeVectorParams(
                size=dim, distance=qe.Distance.Dot, datatype=datatype, quantization_config=quant
            )
        },
        # Below this many KB of (matching) vectors a search scans instead of walking the
        # graph, as in clipy's store: an unfiltered search here always walks the graph (the
        # 5,000-product slice's fused vectors are 22 MB), a selective filter scans.
        hnsw_config=qe.HnswIndexConfig(
            m=m, ef_construct=ef_construct, full_scan_threshold=full_scan_kb
        ),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )
    shard = qe.EdgeShard.create(str(path), config)
    for name, kind in (
        ("gender", qe.PayloadSchemaType.Keyword),
        ("year", qe.PayloadSchemaType.Integer),
    ):
        shard.update(qe.UpdateOperation.create_field_index(name, kind))
    rows = fused_rows(v)
    t0 = time.perf_counter()
    for start in range(0, len(rows), 512):
        batch = [
            qe.Point(
                i,
                {FUSED: rows[i].tolist()},
                {
                    "gender": v.payloads[i].get("gender"),
                    "year": v.payloads[i].get("year"),
                    "row": i,
                },
            )
            for i in range(start, min(start + 512, len(rows)))
        ]
        shard.update(qe.UpdateOperation.upsert_points(batch))
    upsert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    shard.optimize()
    return shard, {
        "upsert_s": round(upsert_s, 2),
        "hnsw_build_s": round(time.perf_counter() - t0, 2),
    }


#: ``--broad-filter`` keeps only the gender condition: a subset above the full-scan threshold,
#: so the engine walks the graph under the filter instead of scanning the subset.
BROAD = [False]


def edge_filter() -> Any:
    """The filter of ``benchmarks.search_bench.FILTER`` (or its gender part alone)."""
    import qdrant_edge as qe

    must = [qe.FieldCondition("gender", match=qe.MatchAny(["Men", "Women"]))]
    if not BROAD[0]:
        must.append(qe.FieldCondition("year", range=qe.RangeFloat(gte=2012)))
    return qe.Filter(must=must)


def oracle_predicate(payload: dict[str, Any]) -> bool:
    if BROAD[0]:
        return payload.get("gender") in ("Men", "Women")
    return filter_predicate(payload)


def measure(
    shard: Any,
    variant: str,
    ef: int,
    queries: list[Any],
    oracle: ExactOracle,
    mask: np.ndarray,
    k: int,
    oversampling: float,
) -> list[dict[str, Any]]:
    import qdrant_edge as qe

    exact_cache = EXACT_CACHE
    quant = (
        qe.QuantizationSearchParams(rescore=True, oversampling=oversampling)
        if variant == "int8"
        else None
    )
    params = qe.SearchParams(hnsw_ef=ef, quantization=quant)
    flt = edge_filter()
    rows = []
    for filtered in (False, True):
        for w in GRID:
            cfg = (
                FusionConfig(w_text=w, w_image=round(1 - w, 1))
                if w < 1
                else FusionConfig(w_text=1, w_image=0)
            )
            vecs = [
                fused_query(q.text, q.image, q.image_hubness, cfg.w_text, cfg.w_image)
                for q in queries
            ]
            requests = [
                qe.SearchRequest(
                    query=qe.Query.Nearest(vec, using=FUSED),
                    limit=k,
                    filter=flt if filtered else None,
                    params=params,
                    with_payload=False,
                )
                for vec in vecs
            ]

            def one(i: int, reqs: list[Any] = requests) -> Any:
                return shard.search(reqs[i])

            lat, hits = time_each(len(requests), one)
            recall = []
            for i, q in enumerate(queries):
                key = (w, filtered, i)
                if key not in exact_cache:
                    exact_cache[key] = oracle.fused(
                        q.text, q.image, q.image_hubness, cfg, mask if filtered else None
                    )
                got = [oracle.v.ids[int(h.id)] for h in hits[i]]
                recall.append(oracle.recall(exact_cache[key], got, k))
            stats = percentiles(lat)
            rows.append(
                {
                    "variant": variant,
                    "ef": ef,
                    "filtered": filtered,
                    "w_text": w,
                    "p50_ms": stats["p50_ms"],
                    "p99_ms": stats["p99_ms"],
                    "recall": round(float(np.mean(recall)), 4),
                    "min_recall": round(float(np.min(recall)), 3),
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--variants", nargs="+", default=["float32", "float16", "int8"])
    parser.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construct", type=int, default=100)
    parser.add_argument("--full-scan-kb", type=int, default=10_000)
    parser.add_argument("--hub-scale", type=float, default=1.0)
    parser.add_argument("--broad-filter", action="store_true", help="gender=Men,Women only")
    parser.add_argument("--quantile", type=float, default=0.99, help="int8 quantile")
    parser.add_argument("--oversampling", type=float, default=2.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("experiments-out/fused_vector_probe.json"))
    args = parser.parse_args()
    HUB_SCALE[0] = args.hub_scale
    QUANTILE[0] = args.quantile
    BROAD[0] = args.broad_filter

    from clipy_qdrant.encoders import get_encoder
    from clipy_qdrant.search import Searcher
    from clipy_qdrant.store import open_store

    store = open_store(args.store)
    info = store.encoder_info()
    assert info is not None
    searcher = Searcher(store, get_encoder(info.name))
    v = StoredVectors.from_store(store)
    texts = query_phrases(v, args.queries, args.seed)
    queries = [searcher.embed(t) for t in texts]
    oracle = ExactOracle(v, searcher.candidates)
    mask = v.mask(oracle_predicate)
    assert mask is not None
    store.close()
    print(
        f"{len(v.ids)} products, {len(queries)} queries, filter keeps {int(mask.sum())}",
        file=sys.stderr,
    )

    result: dict[str, Any] = {
        "products": len(v.ids),
        "queries": len(queries),
        "dim": 2 * v.text.shape[1] + 1,
        "m": args.m,
        "full_scan_threshold_kb": args.full_scan_kb,
        "hub_scale": args.hub_scale,
        "int8_quantile": args.quantile,
        "broad_filter": args.broad_filter,
        "oversampling": args.oversampling,
        "ef_construct": args.ef_construct,
        "builds": {},
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="fused-probe-") as tmp:
        for variant in args.variants:
            shard, build = build_shard(
                Path(tmp) / variant, v, variant, args.m, args.ef_construct, args.full_scan_kb
            )
            result["builds"][variant] = build
            print(f"{variant}: {build}", file=sys.stderr)
            for ef in args.ef:
                rows = measure(shard, variant, ef, queries, oracle, mask, args.k, args.oversampling)
                result["rows"] += rows
                worst = min(r["recall"] for r in rows)
                print(
                    f"{variant} ef={ef}: worst recall {worst}, p50 max {max(r['p50_ms'] for r in rows)}",
                    file=sys.stderr,
                )
            shard.close()

    table = []
    for variant in args.variants:
        for ef in args.ef:
            for filtered in (False, True):
                sel = [
                    r
                    for r in result["rows"]
                    if r["variant"] == variant and r["ef"] == ef and r["filtered"] == filtered
                ]
                table.append(
                    [
                        variant,
                        str(ef),
                        "yes" if filtered else "no",
                        f"{max(r['p50_ms'] for r in sel):.2f}",
                        f"{max(r['p99_ms'] for r in sel):.2f}",
                        f"{min(r['recall'] for r in sel):.4f}",
                        " ".join(f"{r['recall']:.3f}" for r in sel),
                    ]
                )
    print(
        markdown_table(
            [
                "storage",
                "hnsw_ef",
                "filter",
                "worst p50 ms",
                "worst p99 ms",
                "worst recall@10",
                "recall at w_text = 0, 0.1, …, 1",
            ],
            table,
        )
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
