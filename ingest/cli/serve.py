"""``clipy serve``: the HTTP API and search page (:mod:`clipy_qdrant.serve`) under uvicorn.

The store is opened and the encoder loaded once, before the server starts; an embedded store
that another process holds is a one-line error (exit 1). One process serves every request
(the embedded store admits one process); requests run in uvicorn's thread pool, and their
query texts are encoded in coalesced batches with a cache of recent query embeddings
(:class:`~clipy_qdrant.encoders.batching.BatchingEncoder`, ``--query-cache``). Requests are
not logged one by one unless ``--access-log`` is given. BLAS runs on one thread
(:func:`~clipy_qdrant.encoders.blas.one_blas_thread`).
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from types import FrameType
from typing import Annotated

import typer

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
    store_settings,
    user_errors,
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_address(host: str, port: int) -> None:
    """Fail with one line, before anything is served, when the address cannot be bound."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


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
        _check_address(host, port)
        settings = store_settings(store, qdrant_url, api_key, collection, encoder)
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
        if not _is_loopback(host) and options.api_key is None:
            echo_err(
                f"clipy: warning: serving on {host} without a key; set CLIPY_SERVE_API_KEY "
                "to require one"
            )
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
