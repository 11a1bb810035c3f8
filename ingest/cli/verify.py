"""``clipy verify``: check a store's integrity; exit 1 with the list of problems."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from clipy_qdrant.errors import StoreError
from ingest.cli.shell import (
    ApiKeyOpt,
    CollectionOpt,
    EncoderOpt,
    StoreOpt,
    UrlOpt,
    app,
    echo_err,
    encoder_spec,
    load_encoder,
    opened_store,
    store_settings,
    user_errors,
)


@app.command()
def verify(
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"ok", "points", "problems", "notes"} as JSON.')
    ] = False,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
    encoder: EncoderOpt = None,
) -> None:
    """Check every stored product (both vectors finite and unit length, the BM25 vector of
    its text, content hash, payload values fit their index types), the payload indexes, the
    vocabulary, the encoder and the HNSW index.

    Exit status 0 when the store is sound, 1 with one line per problem otherwise.

    Example: clipy verify --store ./clipy-data
    """
    from clipy_qdrant.store.verify import verify_store

    with user_errors():
        settings = store_settings(store, qdrant_url, api_key, collection, encoder)
        with opened_store(settings) as vector_store:
            wanted = load_encoder(settings.encoder).info if settings.encoder else None
            if wanted is None and vector_store.encoder_info() is not None:
                wanted = load_encoder(encoder_spec(settings, vector_store)).info
            report = verify_store(vector_store, wanted)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        else:
            for note in report.notes:
                echo_err(f"note: {note}")
            for problem in report.problems:
                typer.echo(f"problem: {problem}")
        if not report.ok:
            raise StoreError(
                f"store {report.store} has {len(report.problems)} problem(s) "
                f"in {report.points} products (listed above)"
            )
        echo_err(f"store {report.store}: {report.points} products, no problems found")
