"""``clipy copy``: move a store to another backend (folder or server) without re-embedding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clipy_qdrant.errors import ConfigError, StoreError
from ingest.cli.shell import (
    ApiKeyOpt,
    HnswEfConstructOpt,
    HnswMOpt,
    HnswOnDiskOpt,
    OnDiskOpt,
    OversamplingOpt,
    QuantizationOpt,
    ReplicasOpt,
    ShardsOpt,
    WriteConsistencyOpt,
    app,
    echo_err,
    usage_errors,
    user_errors,
)

if TYPE_CHECKING:  # the store modules load when the command runs
    from clipy_qdrant.store.base import VectorStore


def open_location(
    location: str, *, api_key: str | None, collection: str, must_exist: bool
) -> VectorStore:
    """A store named on the command line: an ``http(s)://`` server URL, else a folder."""
    from clipy_qdrant.store import open_store

    if location.startswith(("http://", "https://")):
        return open_store(url=location, api_key=api_key, collection=collection)
    path = Path(location)
    if must_exist and not path.is_dir():
        raise StoreError(f"source store {path} does not exist; name a store folder or a URL")
    return open_store(path)


@app.command()
def copy(
    source: Annotated[str, typer.Argument(help="Store folder or http(s):// server URL to read.")],
    target: Annotated[
        str, typer.Argument(help="Store folder or http(s):// server URL to write (created).")
    ],
    source_collection: Annotated[
        str, typer.Option("--source-collection", help="Collection on a source server.")
    ] = "products",
    target_collection: Annotated[
        str, typer.Option("--target-collection", help="Collection on a target server.")
    ] = "products",
    api_key: ApiKeyOpt = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Points per page and write.")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
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
    """Copy every product (both dense vectors, the lexical BM25 vector, payload, hubness
    values), the store's metadata (encoder, indexes, layout, BM25 constants, the vocabulary
    of spelling correction) and its thumbnails from SOURCE to TARGET, then verify the copy;
    nothing is re-embedded.

    Resumable: products already copied unchanged are skipped. Layout flags (--shards,
    --replicas, --quantization, ...) apply to a target collection the copy creates (default:
    the source's layout). Exits 1 naming the products that differ after the copy.

    Example: clipy copy ./clipy-data http://127.0.0.1:6333 --shards 6 --replicas 2
    """
    from clipy_qdrant.store.options import CollectionOptions

    with usage_errors():
        given = {
            "shards": shards,
            "replicas": replicas,
            "write_consistency": write_consistency,
            "on_disk": on_disk,
            "hnsw_on_disk": hnsw_on_disk,
            "quantization": quantization,
            "oversampling": oversampling,
            "hnsw_m": hnsw_m,
            "hnsw_ef_construct": hnsw_ef_construct,
        }
        options = (
            CollectionOptions.build(**given) if any(v is not None for v in given.values()) else None
        )
        if ":memory:" in (source, target):
            raise ConfigError(
                "':memory:' lives only inside one process, so it cannot be copied from or to; "
                "name a store folder or an http(s):// server URL"
            )
        if source == target and source_collection == target_collection:
            raise ConfigError(f"source and target are the same store ({source})")
    with user_errors():
        from clipy_qdrant.store.copy import copy_store

        src = open_location(source, api_key=api_key, collection=source_collection, must_exist=True)
        try:
            dst = open_location(
                target, api_key=api_key, collection=target_collection, must_exist=False
            )
            try:
                report = copy_store(src, dst, batch=batch, options=options)
            finally:
                dst.close()
        finally:
            src.close()
        if as_json:
            typer.echo(json.dumps(report.to_json()))
        moved = "moved the shard as a snapshot, " if report.snapshot else ""
        echo_err(
            f"clipy: {moved}copied {report.copied} product(s), {report.skipped} already there, "
            f"{report.thumbnails} thumbnail(s), {report.target_points} in {target} "
            f"({report.seconds:.1f} s)"
        )
        if not report.ok:
            raise StoreError(f"the copy in {target} does not match {source}: {report.problems()}")
        echo_err("clipy: verified: every product and the store metadata match the source")
