"""The shell every ``clipy`` command shares: the Typer app, option types, settings, errors.

Commands live in their own modules and register on ``app`` with ``@app.command()``.
Results go to stdout (``--json`` output parses); progress, summaries and errors go to
stderr through ``echo_err``. Inside ``user_errors()`` a ``ClipyError`` becomes one line
``clipy: error: …`` and exit status 1; inside ``usage_errors()`` a ``ConfigError`` from a
flag's value becomes the same one line with exit status 2, the status of a usage error.

Nothing heavy is imported here (model libraries, Qdrant clients): ``clipy --help`` stays
instant, and each command imports what it needs when it runs.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from clipy_qdrant.config import DEFAULT_ENCODER, Settings, apply_offline_environment
from clipy_qdrant.errors import ClipyError, ConfigError
from clipy_qdrant.fusion import FusionConfig

if TYPE_CHECKING:
    from clipy_qdrant.encoders.base import Encoder
    from clipy_qdrant.search import Searcher
    from clipy_qdrant.store.base import VectorStore

apply_offline_environment()

app = typer.Typer(
    name="clipy",
    help="Multimodal product search on Qdrant: ingest a catalog, search it by text and/or image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """The command group: keeps ``clipy CMD`` a subcommand when ``ingest.cli.main`` has
    registered only the command it runs (Typer runs a lone command without its name)."""


def echo_err(message: str) -> None:
    """One line on stderr (progress, summaries, errors): stdout carries results only."""
    typer.echo(message, err=True)


#: errno values of a write that found no space: no space, quota exceeded, file too large.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and exit status 1."""
    try:
        yield
    except ClipyError as exc:
        echo_err(f"clipy: error: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        echo_err("clipy: interrupted (work already stored is kept; re-run to resume)")
        raise typer.Exit(130) from None
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        echo_err(
            f"clipy: error: disk full{where} ({exc.strerror}); free some space and run the "
            "same command again (work already stored is kept)"
        )
        raise typer.Exit(1) from None


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Turn a ``ConfigError`` raised while reading flags into one line and exit status 2."""
    try:
        yield
    except ConfigError as exc:
        echo_err(f"clipy: error: {exc}")
        raise typer.Exit(2) from None


# -- shared options ----------------------------------------------------------------------

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store", help="Folder of the embedded store (env CLIPY_STORE; default: ./clipy-data)."
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--qdrant-url",
        help="Qdrant server URL (or ':memory:'); replaces the embedded store (env CLIPY_QDRANT_URL).",
    ),
]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="Qdrant API key (env CLIPY_API_KEY).")
]
CollectionOpt = Annotated[
    str | None,
    typer.Option(
        "--collection",
        help="Collection name on a server (env CLIPY_COLLECTION; default: products).",
    ),
]
HubnessOpt = Annotated[
    float | None,
    typer.Option(
        "--hubness",
        min=0.0,
        help="Strength (beta) of the hubness correction of text queries searching product "
        "images; 0 turns it off (default: the encoder's, 1 for fashion-mini).",
    ),
]
EncoderOpt = Annotated[
    str | None,
    typer.Option(
        "--encoder",
        help="fashion-mini (shipped, offline), clip-ViT-B-32, or clip:<model id or path> "
        "(env CLIPY_ENCODER; default: the store's own encoder, else fashion-mini).",
    ),
]


# -- collection layout (applied when a command creates a collection on a store) -------------

ShardsOpt = Annotated[
    int | None,
    typer.Option(
        "--shards", min=1, help="Shards of a new server collection (env CLIPY_SHARDS; server only)."
    ),
]
ReplicasOpt = Annotated[
    int | None,
    typer.Option(
        "--replicas",
        min=1,
        help="Copies of each shard on a server cluster (env CLIPY_REPLICAS; server only).",
    ),
]
WriteConsistencyOpt = Annotated[
    int | None,
    typer.Option(
        "--write-consistency",
        min=1,
        help="Replicas that must confirm a write (env CLIPY_WRITE_CONSISTENCY; server only).",
    ),
]
OnDiskOpt = Annotated[
    bool | None,
    typer.Option(
        "--on-disk/--in-ram",
        help="Keep a new collection's original vectors on disk (memory-mapped) or in RAM "
        "(env CLIPY_ON_DISK; default: RAM).",
    ),
]
HnswOnDiskOpt = Annotated[
    bool | None,
    typer.Option(
        "--hnsw-on-disk/--hnsw-in-ram",
        help="Keep a new collection's HNSW graph on disk (env CLIPY_HNSW_ON_DISK; default: RAM).",
    ),
]
QuantizationOpt = Annotated[
    str | None,
    typer.Option(
        "--quantization",
        help="none, int8 (4x smaller) or binary (32x smaller) vector copies kept in RAM and "
        "rescored with the originals (env CLIPY_QUANTIZATION; default: none).",
    ),
]
OversamplingOpt = Annotated[
    float | None,
    typer.Option(
        "--oversampling",
        min=1.0,
        help="With quantization: candidates fetched per result before rescoring "
        "(env CLIPY_OVERSAMPLING; default: 2).",
    ),
]
HnswMOpt = Annotated[
    int | None,
    typer.Option("--hnsw-m", min=2, help="HNSW links per node (env CLIPY_HNSW_M; default: 16)."),
]
HnswEfConstructOpt = Annotated[
    int | None,
    typer.Option(
        "--hnsw-ef-construct",
        min=4,
        help="HNSW build beam width (env CLIPY_HNSW_EF_CONSTRUCT; default: 100).",
    ),
]


# -- settings and the collaborators they name ----------------------------------------------


def build_settings(**flags: Any) -> Settings:
    """The process's settings: a flag that is given beats ``CLIPY_*`` env, which beats defaults.

    Flags are keyword arguments named as ``Settings`` fields; ``None`` means "not given".
    A value of the wrong type, from a flag or the environment, is a one-line ``ConfigError``.
    """
    try:
        return Settings(**{name: value for name, value in flags.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"bad setting (a flag or a CLIPY_* variable): {problems}") from None


def store_settings(
    store: Path | None,
    qdrant_url: str | None,
    api_key: str | None,
    collection: str | None,
    encoder: str | None = None,
    **flags: Any,
) -> Settings:
    """The settings of the store flags (``--store``, ``--qdrant-url``, ``--api-key``,
    ``--collection``, ``--encoder``) and the command's other ``flags`` (``Settings`` fields) a
    command was given, as :func:`build_settings` makes them."""
    return build_settings(
        store=store,
        qdrant_url=qdrant_url,
        api_key=api_key,
        collection=collection,
        encoder=encoder,
        **flags,
    )


def open_configured_store(settings: Settings) -> VectorStore:
    """The store the settings name: a Qdrant server when ``qdrant_url`` is set, else embedded."""
    from clipy_qdrant.store import open_store

    return open_store(
        settings.store,
        url=settings.qdrant_url,
        api_key=settings.api_key,
        collection=settings.collection,
        options=settings.collection_options(),
        hnsw_ef=settings.hnsw_ef,
        search_threads=settings.search_threads,
    )


def encoder_spec(settings: Settings, store: VectorStore | None) -> str:
    """The settings' encoder, else the encoder that wrote the store, else the default."""
    if settings.encoder:
        return settings.encoder
    info = store.encoder_info() if store is not None else None
    return info.name if info is not None else DEFAULT_ENCODER


def load_encoder(spec: str, threads: int | None = None, *, query_words: bool = False) -> Encoder:
    from clipy_qdrant.encoders import get_encoder

    return get_encoder(spec, threads=threads, query_words=query_words)


def open_searcher(
    settings: Settings, hubness: float | None = None, *, query_cache: int | None = None
) -> tuple[VectorStore, Searcher]:
    """The store and a searcher over it; the caller closes the store. With ``query_cache``
    (a number of texts, 0 for none) the encoder coalesces concurrent text encodes and caches
    query embeddings (:class:`~clipy_qdrant.encoders.batching.BatchingEncoder`): for a server's
    threads."""
    from clipy_qdrant.encoders.batching import BatchingEncoder
    from clipy_qdrant.search import Searcher

    vector_store = open_configured_store(settings)
    try:
        spec = encoder_spec(settings, vector_store)
        encoder: Encoder = load_encoder(
            spec, settings.encoder_threads, query_words=settings.query_words
        )
        if query_cache is not None:
            encoder = BatchingEncoder(encoder, cache_size=query_cache)
        searcher = Searcher(
            vector_store, encoder, hubness=hubness, code_queries=settings.code_queries
        )
        return vector_store, searcher
    except BaseException:
        vector_store.close()
        raise


@contextlib.contextmanager
def opened_store(settings: Settings) -> Iterator[VectorStore]:
    """The store the settings name, open for the block and closed after it."""
    vector_store = open_configured_store(settings)
    try:
        yield vector_store
    finally:
        vector_store.close()


@contextlib.contextmanager
def opened_searcher(settings: Settings, hubness: float | None = None) -> Iterator[Searcher]:
    """A searcher over the store the settings name (:func:`open_searcher`), for the block;
    the store is closed after it."""
    vector_store, searcher = open_searcher(settings, hubness)
    try:
        yield searcher
    finally:
        vector_store.close()


def fusion_config(
    method: str, w_text: float | None, w_image: float | None, w_lexical: float | None = None
) -> FusionConfig:
    """The fusion the flags ask for (``FusionConfig.from_weights``): a bad value exits 2."""
    with usage_errors():
        return FusionConfig.from_weights(
            method, w_text=w_text, w_image=w_image, w_lexical=w_lexical
        )
