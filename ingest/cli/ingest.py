"""``clipy ingest``: embed a catalog and store it, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from clipy_qdrant.errors import StoreError
from ingest.cli.shell import (
    ApiKeyOpt,
    CollectionOpt,
    EncoderOpt,
    HnswEfConstructOpt,
    HnswMOpt,
    HnswOnDiskOpt,
    OnDiskOpt,
    OversamplingOpt,
    QuantizationOpt,
    ReplicasOpt,
    ShardsOpt,
    StoreOpt,
    UrlOpt,
    WriteConsistencyOpt,
    app,
    build_settings,
    echo_err,
    encoder_spec,
    load_encoder,
    open_configured_store,
    user_errors,
)

if TYPE_CHECKING:
    from clipy_qdrant.store.base import VectorStore
    from ingest.pipeline import IngestReport


@app.command()
def ingest(
    source: Annotated[
        str,
        typer.Argument(
            help="A parquet file or folder (HF layout), a CSV/JSONL file (with --images), "
            "a folder of images, or a Hugging Face dataset id."
        ),
    ],
    images: Annotated[
        Path | None,
        typer.Option(
            "--images", help="Image folder for a CSV/JSONL catalog (default: images/ beside it)."
        ),
    ] = None,
    image_pattern: Annotated[
        str | None,
        typer.Option(
            "--image-pattern",
            help="Image file name in --images, formatted over the row (default: {id}.jpg when "
            "the catalog has no image column).",
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(
            "--id-column", help="Column holding the product id (default: detected, see --dry-run)."
        ),
    ] = None,
    text: Annotated[
        str | None,
        typer.Option(
            "--text",
            help='Text to embed, a template over the columns, e.g. "{title}, {category}" '
            "(default: detected, the name then the descriptive attributes; see --dry-run).",
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns", help='Keep only these columns ("a,b") or rename ("old=new,...").'
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Ingest only the first N rows.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Re-embed products already stored unchanged.")
    ] = False,
    recreate: Annotated[
        bool,
        typer.Option("--recreate", help="Delete the collection first (e.g. to switch encoders)."),
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Products per encoding batch.")
    ] = 64,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Where to write the JSON report of skipped rows (default: clipy-ingest-report.json).",
        ),
    ] = None,
    no_index: Annotated[
        bool,
        typer.Option(
            "--no-index", help="Do not build the HNSW index after the load (search stays exact)."
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the detected columns (id, name, image, text, field types) and a few "
            "texts; embed and store nothing.",
        ),
    ] = False,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Encode on Ray (pip install 'clipy-qdrant[ray]'): a local Ray started here, "
            "or the cluster at --ray-address.",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster to encode on: auto (the cluster this machine is in) or "
            "ray://HEAD:10001; implies --ray.",
        ),
    ] = None,
    ray_actors: Annotated[
        int, typer.Option("--ray-actors", min=1, help="Encoder actors on Ray (one model each).")
    ] = 1,
    ray_batch_size: Annotated[
        int, typer.Option("--ray-batch-size", min=1, help="Products per batch on a Ray actor.")
    ] = 64,
    ray_cpus_per_actor: Annotated[
        float, typer.Option("--ray-cpus-per-actor", min=0, help="CPUs each Ray actor reserves.")
    ] = 1.0,
    ray_gpus_per_actor: Annotated[
        float,
        typer.Option(
            "--ray-gpus-per-actor", min=0, help="GPUs each Ray actor reserves (0: CPU only)."
        ),
    ] = 0.0,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
    encoder: EncoderOpt = None,
    shards: ShardsOpt = None,
    replicas: ReplicasOpt = None,
    write_consistency: WriteConsistencyOpt = None,
    on_disk: OnDiskOpt = None,
    hnsw_on_disk: HnswOnDiskOpt = None,
    quantization: QuantizationOpt = None,
    oversampling: OversamplingOpt = None,
    hnsw_m: HnswMOpt = None,
    hnsw_ef_construct: HnswEfConstructOpt = None,
) -> None:
    """Embed a catalog's images and texts and store them, resumably.

    The layout flags (--shards, --replicas, --quantization, --on-disk, ...) apply when this
    run creates the collection; they are recorded with it (see clipy info).

    Example: clipy ingest ../shared/datasets/fashion-product-images-small --limit 1000
    See what it would do first: clipy ingest products.csv --dry-run
    On Ray, 4 encoder actors: clipy ingest products.csv --ray --ray-actors 4
    """
    with user_errors():
        ray_options = None
        if ray or ray_address:
            from ingest.distributed import LOCAL, RayOptions, import_ray

            import_ray()  # without Ray installed: one line saying how to install it
            ray_options = RayOptions(
                address=ray_address or LOCAL,
                actors=ray_actors,
                batch_size=ray_batch_size,
                cpus_per_actor=ray_cpus_per_actor,
                gpus_per_actor=ray_gpus_per_actor,
            )
            ray_options.check()
        settings = build_settings(
            store=store,
            qdrant_url=qdrant_url,
            api_key=api_key,
            collection=collection,
            encoder=encoder,
            shards=shards,
            replicas=replicas,
            write_consistency=write_consistency,
            on_disk=on_disk,
            hnsw_on_disk=hnsw_on_disk,
            quantization=quantization,
            oversampling=oversampling,
            hnsw_m=hnsw_m,
            hnsw_ef_construct=hnsw_ef_construct,
        )
        from ingest.pipeline import run_ingest
        from ingest.platforms import PlatformCatalog
        from ingest.readers import open_catalog, parse_columns

        catalog = open_catalog(
            source,
            images=images,
            image_pattern=image_pattern,
            id_column=id_column,
            text_template=text,
            columns=parse_columns(columns),
            limit=limit,
        )
        if dry_run:
            from ingest.schema import describe_catalog

            typer.echo("\n".join(describe_catalog(catalog).lines()))
            return
        folder = None if settings.qdrant_url else Path(settings.store)
        new_folder = folder is not None and not folder.exists()
        indexed_fields = None
        schema = getattr(catalog, "schema", None)
        if isinstance(catalog, PlatformCatalog) or (
            schema is not None and schema.image_kind == "url"
        ):
            # Image URLs are fetched once into a cache beside the store (or the cache dir).
            from ingest.fetch import CACHE_DIR_NAME, ImageFetcher, ImageURLCatalog

            cache = (folder or settings.cache_dir) / CACHE_DIR_NAME
            if isinstance(catalog, PlatformCatalog):
                indexed_fields = catalog.indexed_fields()
            catalog = ImageURLCatalog(catalog, ImageFetcher(cache, keep_data=False))
        guard = None if settings.qdrant_url else DiskGuard(settings.store)
        if guard is not None:
            guard.check()
        vector_store = open_configured_store(settings)
        try:
            if recreate:
                vector_store.delete_collection()
            spec = encoder_spec(settings, vector_store)
            options: dict[str, Any] = {
                "batch_size": batch_size,
                "force": force,
                "report_path": report or Path("clipy-ingest-report.json"),
                "build_index": not no_index,
                "indexed_fields": indexed_fields,
            }
            if ray_options is None:
                echo_err(f"clipy: ingesting {source} with encoder {spec}")
                result = run_ingest(
                    catalog,
                    vector_store if guard is None else guard.watch(vector_store),
                    load_encoder(spec, settings.encoder_threads),
                    **options,
                )
            else:
                import functools

                from clipy_qdrant.encoders import get_encoder
                from clipy_qdrant.store import open_store
                from ingest.distributed import run_ray_ingest

                # A server is written by the actors themselves; the embedded store (one
                # process holds its folder) and the in-memory one by the driver.
                worker_store = (
                    functools.partial(
                        open_store,
                        url=settings.qdrant_url,
                        api_key=settings.api_key,
                        collection=settings.collection,
                    )
                    if settings.qdrant_url and settings.qdrant_url != ":memory:"
                    else None
                )
                echo_err(
                    f"clipy: ingesting {source} with encoder {spec} on Ray "
                    f"({ray_options.address}, {ray_options.actors} "
                    f"actor{'s' if ray_options.actors != 1 else ''}, "
                    f"{'the actors write' if worker_store else 'the driver writes'})"
                )
                result = run_ray_ingest(
                    catalog,
                    vector_store if guard is None else guard.watch(vector_store),
                    functools.partial(get_encoder, spec),
                    ray_options,
                    encoder=load_encoder(spec),
                    worker_store=worker_store,
                    **options,
                )
            if not no_index and not result.index_built:
                _finish_index(vector_store, result)
        finally:
            vector_store.close()
            # A failed first ingest leaves no empty store folder behind.
            if new_folder and folder is not None and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        for line in result.summary_lines():
            echo_err(line)


#: Free space ``clipy ingest`` keeps on the embedded store's disk. The engine writes through
#: memory maps, and a memory-mapped write to a full disk kills the process (SIGBUS) instead
#: of failing with an error; stopping at this margin gives a clear error and a store that
#: resumes once space is freed. 256 MiB holds what opening the store may write (the two WAL
#: segments, 32 MiB each, and the appendable segment's vector storage, which grows by chunks
#: for each of the three named vectors; with 96 MiB free a store with the fused vector could
#: not be reopened) and a batch.
DISK_RESERVE_BYTES = 256 * 2**20


class DiskGuard:
    """Stops an ingest with a one-line ``StoreError`` before the store's disk is full."""

    def __init__(self, store: Path, reserve: int = DISK_RESERVE_BYTES) -> None:
        self.store = Path(store)
        self.reserve = reserve

    def free_bytes(self) -> int:
        import shutil

        folder = self.store
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return shutil.disk_usage(folder).free

    def check(self) -> None:
        free = self.free_bytes()
        if free < self.reserve:
            raise StoreError(
                f"store {self.store}: only {free / 2**20:.0f} MiB free on its disk, below the "
                f"{self.reserve / 2**20:.0f} MiB clipy keeps free while writing; free some space "
                "and run the same command again (it resumes where it stopped)"
            )

    def watch(self, store: VectorStore) -> VectorStore:
        """``store``, checking the free space before each write."""
        return cast("VectorStore", _Watched(store, self))


class _Watched:
    """A store whose writes first check the disk; every other call passes through."""

    def __init__(self, store: VectorStore, guard: DiskGuard) -> None:
        self._store = store
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name in _WRITES:
            self._guard.check()
        return attribute


#: Store calls that write to the disk.
_WRITES = frozenset({"upsert", "put_thumbnails", "set_payload", "set_hubness_info", "build_index"})


def _finish_index(vector_store: VectorStore, result: IngestReport) -> None:
    """Build the HNSW graph that an interrupted run left unfinished: the resume finds every
    product unchanged, so the pipeline sees nothing new to index."""
    import time

    from clipy_qdrant.store.verify import index_unfinished

    if not index_unfinished(vector_store):
        return
    echo_err("clipy: building the HNSW index an interrupted run left unfinished")
    started = time.perf_counter()
    vector_store.build_index()
    result.index_built = True
    result.index_seconds = time.perf_counter() - started
    if result.report_path:
        result.write(Path(result.report_path))
