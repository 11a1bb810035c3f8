"""Probe qdrant-edge's search pool (``max_search_threads``) on a copy of an ingested store:
CPU and wall time per engine call of the kinds a text query makes.

qdrant-edge searches a shard's segments on a pool of threads (one per CPU by default). This
script copies the store's shard into a temporary folder once per setting (loading it with a
pool size writes that size into the shard's config, so the store itself is never touched),
then times, for each setting in turn and ``--rounds`` times:

- ``hnsw``: a text-vector HNSW search of 100 (beam 128), the query a stored text vector;
- ``hnsw_image``: the same on the image vector;
- ``restricted``: an exact search restricted to 100 product ids (``MatchAny`` on the
  ``product_id`` index), as exact fusion scores the products missing from a list;
- ``retrieve``: the payloads of 24 points;
- ``three_lists``: the text, image and a lexical list of one query, one call each.

It prints, per setting and kind, the best round's CPU and wall milliseconds per call.

    PYTHONPATH=$PWD python experiments/search_pool_probe.py --store STORE [--threads 0 1 2]
        [--calls 300] [--rounds 2]

``--threads 0`` is the engine's default pool.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipy_qdrant.store.edge import META_FILE, SHARD_DIR
from clipy_qdrant.store.meta import StoreMeta
from clipy_qdrant.store.options import edge_load_config


def shard_copy(store: Path, threads: int, into: Path) -> Any:
    """The store's shard copied to ``into``, loaded with a pool of ``threads`` (0: default)."""
    import json

    import qdrant_edge as qe

    shutil.copytree(store / SHARD_DIR, into)
    config = json.loads((into / "edge_config.json").read_text())
    config.pop("max_search_threads", None)
    (into / "edge_config.json").write_text(json.dumps(config))
    if threads == 0:
        return qe.EdgeShard.load(str(into))
    meta = StoreMeta.from_json(json.loads((store / META_FILE).read_text()), str(store))
    return qe.EdgeShard.load(str(into), edge_load_config(meta.options, meta.encoder.dim, threads))


def calls(shard: Any) -> dict[str, Callable[[int], Any]]:
    import qdrant_edge as qe

    records, _ = shard.scroll(qe.ScrollRequest(limit=3000, with_payload=True, with_vector=True))
    texts = [r.vector["text"] for r in records[:200]]
    images = [r.vector["image"] for r in records[200:400]]
    products = [str(r.payload["product_id"]) for r in records]
    ids = [r.id for r in records]

    def nearest(vector: Any, using: str, flt: Any = None, exact: bool = False) -> Any:
        return shard.search(
            qe.SearchRequest(
                query=qe.Query.Nearest(vector, using=using),
                limit=100,
                filter=flt,
                params=qe.SearchParams(hnsw_ef=128, exact=exact),
                with_payload=False,
            )
        )

    def lexical(i: int) -> Any:
        terms = qe.SparseVector(indices=[3 + i % 50, 100 + i % 70, 7], values=[1.0, 1.0, 1.0])
        request = qe.QueryRequest(
            query=qe.Query.Nearest(terms, using="lexical"), limit=100, with_payload=False
        )
        return shard.query(request)

    def restricted(i: int) -> Any:
        start = (i * 37) % 2800
        match = qe.MatchAny(products[start : start + 100])
        flt = qe.Filter(must=[qe.FieldCondition("product_id", match=match)])
        return nearest(texts[i % 200], "text", flt, exact=True)

    def three_lists(i: int) -> None:
        nearest(texts[i % 200], "text")
        nearest(images[i % 200], "image")
        lexical(i)

    return {
        "hnsw": lambda i: nearest(texts[i % 200], "text"),
        "hnsw_image": lambda i: nearest(images[i % 200], "image"),
        "restricted": restricted,
        "retrieve": lambda i: shard.retrieve(ids[(i * 24) % 2900 :][:24], True, False),
        "three_lists": three_lists,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    best: dict[tuple[int, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="clipy-pool-") as tmp:
        for round_ in range(args.rounds):
            for threads in args.threads:
                shard = shard_copy(args.store, threads, Path(tmp) / f"r{round_}-t{threads}")
                for kind, call in calls(shard).items():
                    for i in range(20):
                        call(i)
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    for i in range(args.calls):
                        call(i)
                    cpu = (time.process_time() - cpu0) / args.calls * 1000
                    wall = (time.perf_counter() - wall0) / args.calls * 1000
                    old = best.get((threads, kind), (cpu, wall))
                    best[(threads, kind)] = (min(old[0], cpu), min(old[1], wall))
                shard.close()
    print(f"{'pool':>8} {'call':<12} {'CPU ms':>8} {'wall ms':>8}")
    for (threads, kind), (cpu, wall) in sorted(best.items()):
        name = "default" if threads == 0 else str(threads)
        print(f"{name:>8} {kind:<12} {cpu:8.3f} {wall:8.3f}")


if __name__ == "__main__":
    main()
