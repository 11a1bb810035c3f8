"""Probe the lexical channel alone on the catalog: BM25 over the product texts, with and
without spelling correction, and the same BM25 run inside qdrant-edge.

What it measures (no encoder, no fusion): for each query set of clipy eval (known-item
names, attribute phrases, their typo variants, product codes, brands), BM25's P@10 and
nDCG@10 with ties counted as losses (:func:`clipy_qdrant.eval.metrics.pessimistic_order`);
typo sets also after :class:`clipy_qdrant.spelling.SpellingCorrector`. Then an ``EdgeShard``
with one sparse vector (IDF modifier) holding every product's BM25 document weights: upsert
time, query latency, and the largest score difference from the numpy reference.

    python experiments/lexical_probe.py [--catalog PATH] [--out experiments-out/lexical.json]

Texts are the default product text ingest writes (name, gender, usage, season, articleType,
baseColour). Queries are about held-out products (``clipy_qdrant.split``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.config import Settings

ATTRIBUTES = ("gender", "usage", "season", "articleType", "baseColour")
COLUMNS = ("id", "productDisplayName", "masterCategory", "subCategory", "year", *ATTRIBUTES)
K = 10


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


def _text(p: Mapping[str, Any]) -> str:
    attrs = " ".join(str(p[a]) for a in ATTRIBUTES if p.get(a))
    name = str(p.get("productDisplayName", ""))
    return f"{name}, {attrs}" if attrs else name


def _score_set(
    queries: Sequence[Any], rank: Any, products: Sequence[Mapping[str, Any]], heldout: np.ndarray
) -> dict[str, float]:
    from clipy_qdrant.eval.metrics import ndcg_at_k, pessimistic_order, precision_at_k
    from clipy_qdrant.filters import matches

    ids = [p["product_id"] for p in products]
    p10, ndcg = [], []
    for q in queries:
        scores = rank(q.text)
        allowed = heldout if q.gallery == "heldout" else np.ones(len(ids), dtype=bool)
        if q.relevant_ids is not None:
            relevant = set(q.relevant_ids)
        else:
            flt = q.relevance_filter()
            relevant = {ids[i] for i in np.flatnonzero(allowed) if matches(flt, products[i])}
        relevant &= {ids[i] for i in np.flatnonzero(allowed)}
        if not relevant:
            continue
        masked = np.where(allowed & (scores > 0), scores, -np.inf)
        cut = np.sort(masked)[-K] if len(masked) >= K else -np.inf
        rows = [i for i in np.flatnonzero(masked >= cut) if np.isfinite(masked[i])]
        rows.sort(key=lambda i: -masked[i])
        order = pessimistic_order(
            [ids[i] for i in rows], [float(masked[i]) for i in rows], relevant
        )
        p10.append(precision_at_k(order, relevant, K))
        ndcg.append(ndcg_at_k(order, relevant, K))
    return {"queries": len(p10), "p@10": float(np.mean(p10)), "ndcg@10": float(np.mean(ndcg))}


def _edge(
    texts: Sequence[str], queries: Sequence[str], reference: Any, params: Any
) -> dict[str, float]:
    import qdrant_edge as qe

    from clipy_qdrant.lexical import LEXICAL, document_vector, query_vector

    with tempfile.TemporaryDirectory() as tmp:
        config = qe.EdgeConfig(
            sparse_vectors={LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
        )
        shard = qe.EdgeShard.create(str(Path(tmp) / "shard"), config)
        start = time.perf_counter()
        batch = []
        for row, text in enumerate(texts):
            doc = document_vector(text, params)
            vector = {LEXICAL: qe.SparseVector(indices=list(doc.indices), values=list(doc.values))}
            batch.append(qe.Point(str(uuid.UUID(int=row)), vector, {"row": row}))  # type: ignore[arg-type]
            if len(batch) == 1000:
                shard.update(qe.UpdateOperation.upsert_points(batch))
                batch = []
        if batch:
            shard.update(qe.UpdateOperation.upsert_points(batch))
        upsert_s = time.perf_counter() - start
        latency, worst = [], 0.0
        for text in queries:
            q = query_vector(text)
            request = qe.QueryRequest(
                query=qe.Query.Nearest(
                    qe.SparseVector(indices=list(q.indices), values=list(q.values)), using=LEXICAL
                ),
                limit=K,
                with_payload=True,
            )
            start = time.perf_counter()
            hits = shard.query(request)
            latency.append((time.perf_counter() - start) * 1000)
            want = reference.scores(text)
            for hit in hits:
                worst = max(
                    worst,
                    abs(float(hit.score) - want[int(hit.payload["row"])]) / max(1.0, want.max()),
                )
            got = sorted((float(h.score) for h in hits), reverse=True)
            top = sorted(want, reverse=True)[: len(got)]
            worst = max(
                worst, max((abs(a - b) for a, b in zip(got, top, strict=True)), default=0.0)
            )
        shard.close()
    latency.sort()
    return {
        "points": len(texts),
        "upsert_s": upsert_s,
        "query_ms_p50": statistics.median(latency),
        "query_ms_p99": latency[min(len(latency) - 1, int(0.99 * len(latency)))],
        "max_score_difference": worst,
    }


def main(argv: list[str] | None = None) -> int:
    from clipy_qdrant.eval.catalog_queries import attribute_queries, known_item_queries
    from clipy_qdrant.eval.shopper_queries import brand_queries, code_queries, typo_queries
    from clipy_qdrant.lexical import Bm25Reference
    from clipy_qdrant.spelling import SpellingCorrector, Vocabulary
    from clipy_qdrant.split import is_heldout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=Settings().catalog)
    parser.add_argument("--out", type=Path, default=Path("experiments-out/lexical.json"))
    args = parser.parse_args(argv)

    products = _products(args.catalog)
    texts = [_text(p) for p in products]
    vocabulary = Vocabulary.from_texts(texts)
    params = vocabulary.bm25_params()
    reference = Bm25Reference(texts, params)
    corrector = SpellingCorrector(vocabulary)
    heldout = np.array([is_heldout(p["product_id"]) for p in products])

    def bm25(text: str | None) -> np.ndarray:
        return reference.scores(text or "")

    def corrected(text: str | None) -> np.ndarray:
        return reference.scores(corrector.correct(text or "").corrected)

    sets: dict[str, list[Any]] = {
        "known-item": known_item_queries(products),
        "attribute": attribute_queries(products),
        "code": code_queries(products),
        "brand": brand_queries(products),
    }
    for q in typo_queries(products):
        sets.setdefault(q.set, []).append(q)
    results: dict[str, Any] = {}
    for name, queries in sets.items():
        results[name] = {"bm25": _score_set(queries, bm25, products, heldout)}
        if name.startswith("typo/") or name in ("attribute", "known-item"):
            results[name]["bm25+spelling"] = _score_set(queries, corrected, products, heldout)
        print(name, json.dumps(results[name]), file=sys.stderr)
    probe = [q.text or "" for q in sets["known-item"][:100] + sets["attribute"][:100]]
    results["edge"] = _edge(texts, probe, reference, params)
    print("edge", json.dumps(results["edge"]), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
