"""``clipy serve``: the HTTP API and search page (:mod:`clipy_qdrant.serve`) under uvicorn.

The store is opened and the encoder loaded once, before the server starts; an embedded store
that another process holds is a one-line error (exit 1). By default one process serves every
request; requests run in uvicorn's thread pool, and their
query texts are encoded in coalesced batches with a cache of recent query embeddings
(:class:`~clipy_qdrant.encoders.batching.BatchingEncoder`, ``--query-cache``). Requests are
not logged one by one unless ``--access-log`` is given. BLAS runs on one thread
(:func:`~clipy_qdrant.encoders.blas.one_blas_thread`). ``--workers N`` serves from N
processes instead (:mod:`ingest.cli.workers`).
"""

from __future__ import annotations

import ipaddress
import signal
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from clipy_qdrant.config import Settings
from clipy_qdrant.encoders import registered_factories
from clipy_qdrant.errors import ConfigError
from ingest.cli.shell import (
    ApiKeyOpt,
    CollectionOpt,
    EncoderOpt,
    HubnessOpt,
    StoreOpt,
    UrlOpt,
    app,
    echo_err,
    open_searcher,
    opened_store,
    store_settings,
    user_errors,
)

if TYPE_CHECKING:
    from clipy_qdrant.serve import ServeOptions


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_address(host: str, port: int) -> None:
    """Fail with one line, before anything is served, when the address cannot be bound."""
    from ingest.cli.workers import bind

    if port != 0:
        bind(host, port).close()


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM after uvicorn's graceful shutdown: leave through ``finally`` (store closed)."""
    raise SystemExit(0)


@app.command()
def serve(
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address to bind; loopback by default (0.0.0.0 for every interface)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="Allow browser pages from this origin (e.g. https://shop.example) to call the "
            "API; repeatable. Off by default.",
        ),
    ] = None,
    query_cache: Annotated[
        int,
        typer.Option(
            "--query-cache",
            min=0,
            help="Query texts whose embeddings are kept (most recently used); 0 turns the "
            "cache off.",
        ),
    ] = 1024,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (one line each).")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes answering requests side by side (env CLIPY_SERVE_WORKERS; default "
            "1). With the embedded store the first opens the store and each other one its own "
            "copy of it, made at start in the temporary folder (TMPDIR): N - 1 times the "
            "store's disk, N times its memory.",
        ),
    ] = None,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
    encoder: EncoderOpt = None,
    hubness: HubnessOpt = None,
) -> None:
    """Serve the HTTP API (/v1/..., docs at /docs) and the search page (/).

    Clients must send the header X-API-Key when CLIPY_SERVE_API_KEY is set.

    Example: clipy serve --store ./clipy-data --port 8000
    """
    import uvicorn

    from clipy_qdrant.encoders.blas import one_blas_thread
    from clipy_qdrant.serve import ServeOptions, create_app

    with user_errors():
        settings = store_settings(
            store, qdrant_url, api_key, collection, encoder, serve_workers=workers
        )
        if settings.serve_workers > 1:
            options = ServeOptions.from_settings(
                settings,
                cors_origins=tuple(cors_origin or ()),
                store_label=settings.qdrant_url or str(settings.store),
            )
            _warn_open(host, options)
            _serve_workers(settings, options, host, port, hubness, query_cache, access_log)
            return
        _check_address(host, port)
        vector_store, searcher = open_searcher(settings, hubness, query_cache=query_cache)
    try:
        with user_errors():
            label = settings.qdrant_url or str(settings.store)
            options = ServeOptions.from_settings(
                settings, cors_origins=tuple(cors_origin or ()), store_label=label
            )
            web_app = create_app(searcher, options)
            one_blas_thread()  # many small products at once: no BLAS worker threads spinning
            searcher.embed("warm up")  # the first query does not pay for lazy model set-up
            searcher.preload()  # nor do the first minutes' queries for product-by-product reads
        _warn_open(host, options)
        echo_err(
            f"clipy: serving {label} ({vector_store.count()} products) on http://{host}:{port}/ "
            f"(API docs: /docs)"
        )
        # uvicorn shuts down on SIGINT/SIGTERM, then raises the signal again with the handler
        # it found: this one, so that the store below is closed rather than the process killed.
        previous = signal.signal(signal.SIGTERM, _stop)
        try:
            uvicorn.run(
                web_app,
                host=host,
                port=port,
                log_level="info",
                access_log=access_log,
                server_header=False,
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        vector_store.close()


def _warn_open(host: str, options: ServeOptions) -> None:
    if not _is_loopback(host) and options.api_key is None:
        echo_err(
            f"clipy: warning: serving on {host} without a key; set CLIPY_SERVE_API_KEY "
            "to require one"
        )


def _serve_workers(
    settings: Settings,
    options: ServeOptions,
    host: str,
    port: int,
    hubness: float | None,
    query_cache: int,
    access_log: bool,
) -> None:
    """Serve from ``settings.serve_workers`` processes (:mod:`ingest.cli.workers`) until
    SIGINT/SIGTERM or until a worker exits."""
    from ingest.cli import workers as serving

    settings = serving.worker_settings(settings)

    def spec(index: int, worker_settings: Settings) -> serving.WorkerSpec:
        return serving.WorkerSpec(
            index=index,
            settings=worker_settings,
            hubness=hubness,
            query_cache=query_cache,
            options=options,
            access_log=access_log,
            encoders=registered_factories(),
        )

    sock = serving.bind(host, port)
    try:
        # Open for its product count and the copies only: the first worker opens it next.
        with opened_store(settings) as vector_store:
            products = vector_store.count()
            specs, copies = serving.prepare(vector_store, settings, settings.serve_workers, spec)
    except BaseException:
        sock.close()
        raise
    pool = serving.Workers(specs, sock, copies)
    # SIGINT too, as uvicorn does: a process started in the background inherits it ignored.
    previous = (
        signal.signal(signal.SIGTERM, _stop),
        signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    try:
        pool.start()
        bound = sock.getsockname()[1]
        echo_err(
            f"clipy: serving {options.store_label} ({products} products) on "
            f"http://{host}:{bound}/ from {len(specs)} worker processes (API docs: /docs)"
        )
        ended = pool.wait()
        raise ConfigError(
            f"worker {ended.name} (pid {ended.pid}) exited with code {ended.exitcode}; "
            "the server stops"
        )
    except KeyboardInterrupt:
        echo_err("clipy: stopping the workers")
    finally:
        pool.stop()
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
