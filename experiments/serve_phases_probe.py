"""Serve the HTTP API with the wall time of each phase of a search accounted: where a
request's time goes under load.

It runs the app ``clipy serve`` runs (same store, encoder, coalescing encoder and query
cache) under uvicorn, with the searcher's phases (``search_page``, ``embed``, the coalescing
encoder, ``search_vectors_page``) and the store's calls (``search``, ``search_lexical``,
``retrieve``, and the engine calls beneath them) timed on every thread. ``SIGUSR1`` clears
the counters (after a warm-up), ``SIGUSR2`` prints wall milliseconds and calls per search.

    PYTHONPATH=$PWD python experiments/serve_phases_probe.py --store STORE --port 8769 &
    python benchmarks/load.py --url http://127.0.0.1:8769 --kinds text --seconds 15
    kill -USR1 %1
    python benchmarks/load.py --url http://127.0.0.1:8769 --kinds text --seconds 30
    kill -USR2 %1
"""

from __future__ import annotations

import argparse
import collections
import signal
import threading
import time
from typing import Any

from clipy_qdrant.encoders.batching import BatchingEncoder
from clipy_qdrant.search import Searcher
from clipy_qdrant.store.edge import EdgeStore
from clipy_qdrant.store.qdrant import QdrantStore

WALL: collections.defaultdict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter[str] = collections.Counter()
LOCK = threading.Lock()


def timed(cls: type, name: str, label: str) -> None:
    """Replace ``cls.name`` by a wrapper adding its wall time to ``label``'s counters."""
    original = getattr(cls, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent = time.perf_counter() - start
            with LOCK:
                WALL[label] += spent
                CALLS[label] += 1

    setattr(cls, name, wrapper)


def report() -> None:
    searches = CALLS["search_page"] or 1
    print(f"{searches} searches")
    for label in sorted(WALL, key=lambda k: -WALL[k]):
        per = 1000 * WALL[label] / searches
        print(f"{label:<34} {per:8.1f} ms per search ({CALLS[label] / searches:.2f} calls)")


def main() -> None:
    import uvicorn

    from clipy_qdrant.encoders.blas import one_blas_thread
    from clipy_qdrant.serve import ServeOptions, create_app
    from ingest.cli.shell import build_settings, open_searcher

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--port", type=int, default=8769)
    args = parser.parse_args()
    for cls, name, label in (
        (Searcher, "search_page", "search_page"),
        (Searcher, "embed", "embed"),
        (BatchingEncoder, "encode_texts", "coalescing encoder"),
        (Searcher, "search_vectors_page", "search_vectors_page"),
        (QdrantStore, "search", "store search"),
        (QdrantStore, "search_lexical", "store lexical search"),
        (QdrantStore, "retrieve", "store retrieve"),
        (EdgeStore, "_search", "engine search"),
        (EdgeStore, "_search_sparse", "engine lexical query"),
        (EdgeStore, "_retrieve", "engine retrieve"),
    ):
        timed(cls, name, label)
    settings = build_settings(
        store=args.store, qdrant_url=None, api_key=None, collection=None, encoder=None
    )
    store, searcher = open_searcher(settings, None, query_cache=1024)
    app = create_app(searcher, ServeOptions.from_settings(settings, store_label=args.store))
    one_blas_thread()
    searcher.embed("warm up")
    signal.signal(signal.SIGUSR1, lambda *_: (WALL.clear(), CALLS.clear()))
    signal.signal(signal.SIGUSR2, lambda *_: report())
    try:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    finally:
        store.close()


if __name__ == "__main__":
    main()
