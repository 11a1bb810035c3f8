"""Settings: the only module that reads or writes the environment (prefix ``CLIPY_``).

Precedence: command-line flags > environment > defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The catalog copy sits beside the checkout (``../shared``), relative to the working directory.
DEFAULT_CATALOG = Path("../shared/datasets/fashion-product-images-small")


DEFAULT_ENCODER = "fashion-mini"

if TYPE_CHECKING:
    from clipy_qdrant.store.options import CollectionOptions

#: Settings fields that lay out a new collection (CollectionOptions' fields of the same name).
COLLECTION_OPTION_FIELDS = (
    "shards",
    "replicas",
    "write_consistency",
    "on_disk",
    "hnsw_on_disk",
    "quantization",
    "oversampling",
    "hnsw_m",
    "hnsw_ef_construct",
    "fused_vector",
)


class Settings(BaseSettings):
    """Every tunable that is not a per-call argument."""

    model_config = SettingsConfigDict(env_prefix="CLIPY_", extra="ignore")

    #: Folder of the embedded (qdrant-edge) store.
    store: Path = Path("./clipy-data")
    #: URL of a Qdrant server; when set it is used instead of the embedded store.
    qdrant_url: str | None = None
    #: API key of the Qdrant server (sent to the server, never asked of HTTP clients); left out
    #: of the settings' repr, so that no log or error message shows it.
    api_key: str | None = Field(default=None, repr=False)
    collection: str = "products"
    #: Encoder name or spec: ``fashion-mini`` (shipped, offline) or ``clip:<id-or-path>``.
    #: Unset: a store's own encoder when querying, ``DEFAULT_ENCODER`` when ingesting.
    encoder: str | None = None
    #: Local copy of the fashion catalog used by tests, benchmarks and evaluation.
    catalog: Path = DEFAULT_CATALOG
    #: Where derived artefacts (ONNX exports of the frozen towers) are cached.
    cache_dir: Path = Path.home() / ".cache" / "clipy"
    #: Search a query that is a code and nothing else without the text channel where the
    #: catalog holds the code (:mod:`clipy_qdrant.query_rules`); ``CLIPY_CODE_QUERIES=0`` turns
    #: the rule off (to A/B it with ``clipy eval``).
    code_queries: bool = True
    #: Server URL for the server test tier; unset means that tier is skipped with a reason.
    test_qdrant_url: str | None = None

    # Layout of a collection clipy creates (CollectionOptions; unset: the engine's default).
    # Shards, replicas and write consistency exist on a Qdrant server only.
    shards: int | None = None
    replicas: int | None = None
    write_consistency: int | None = None
    on_disk: bool | None = None
    hnsw_on_disk: bool | None = None
    quantization: Literal["none", "int8", "binary"] | None = None
    oversampling: float | None = None
    hnsw_m: int | None = None
    hnsw_ef_construct: int | None = None
    #: Store each product's fused vector (``CLIPY_FUSED_VECTOR=0``: not; unset: stored).
    fused_vector: bool | None = None
    #: Search beam width of the channel lists (unset: the store's ``DEFAULT_HNSW_EF``); a
    #: wider beam misses fewer neighbours and costs more CPU per query.
    hnsw_ef: PositiveInt | None = None
    #: Threads of the embedded engine's search pool, which searches a store's segments in
    #: parallel (unset: ``DEFAULT_SEARCH_THREADS``, one; concurrent requests already use the
    #: other cores). A Qdrant server sizes its own.
    search_threads: PositiveInt | None = None
    #: Intra-op threads of the encoder's model runtime (ONNX Runtime, or torch for CLIP) in
    #: each process (unset: the runtime's default, every core; ``clipy serve --workers N``
    #: gives each worker its share of the cores, at least one).
    encoder_threads: PositiveInt | None = None
    #: Encode query texts with fashion-mini's query words table where it covers them
    #: (:mod:`clipy_qdrant.encoders.fashion.query_words`): a fraction of MiniLM's CPU per
    #: query; off, every query text goes through MiniLM. Product texts never use it.
    query_words: bool = False

    # -- ``clipy serve`` (the HTTP API and search page) ------------------------------------
    #: Key that HTTP clients must send as ``X-API-Key`` on every endpoint but ``/healthz``;
    #: unset means no key is asked (bind to loopback then). Set it only through the
    #: environment (``CLIPY_SERVE_API_KEY``), never on a command line.
    serve_api_key: str | None = None
    #: Largest request body accepted, in bytes (JSON or multipart; larger is a 413).
    serve_max_body_bytes: PositiveInt = 12 * 1024 * 1024
    #: Largest query image accepted, in bytes once decoded from base64 or uploaded.
    serve_max_image_bytes: PositiveInt = 8 * 1024 * 1024
    #: Largest query image accepted, in pixels (width times height), checked before decoding.
    serve_max_image_pixels: PositiveInt = 25_000_000
    #: Most results one request may ask for (``k``) and deepest page (``offset + k``).
    serve_max_k: PositiveInt = 100
    serve_max_depth: PositiveInt = 1000
    #: Processes that answer requests side by side (``clipy serve --workers``). Each has its
    #: own interpreter lock, encoder and engine; with the embedded store the first opens the
    #: store and each other one its own copy of it, made when the server starts.
    serve_workers: PositiveInt = 1
    #: Folder where the browser test saves its screenshots (default: a pytest temp folder).
    test_artifacts: Path | None = None

    def collection_options(self) -> CollectionOptions | None:
        """The collection layout asked for; ``None`` when no option is set (a collection
        keeps its own, a new one gets the defaults). A bad value raises ``ConfigError``."""
        from clipy_qdrant.store.options import CollectionOptions

        given = {name: getattr(self, name) for name in COLLECTION_OPTION_FIELDS}
        if all(value is None for value in given.values()):
            return None
        return CollectionOptions.build(**given)


def get_settings() -> Settings:
    return Settings()


def default_cache_dir() -> Path:
    """Where derived artefacts are cached unless a caller passes its own folder."""
    return Settings().cache_dir


def apply_offline_environment() -> None:
    """Keep the model libraries off the network and quiet: the shipped models are local."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
