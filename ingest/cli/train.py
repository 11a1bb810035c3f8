"""``clipy train``: train the offline fashion encoder's projection heads."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ingest.cli.shell import app
from ingest.cli.shell import echo_err as _err
from ingest.cli.shell import user_errors as _user_errors


@app.command()
def train(
    catalog: Annotated[
        str, typer.Argument(help="The catalog to train on (any source clipy ingest reads).")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Model folder to write (heads, config, card).")
    ],
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Use only the first N products.")
    ] = None,
    text: Annotated[
        str | None,
        typer.Option(
            "--text", help="Text template of the product caption (default: {productDisplayName})."
        ),
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Image folder for a CSV/JSONL catalog.")
    ] = None,
) -> None:
    """Train the offline fashion encoder's projection heads (CLIP loss, held-out split by id).

    Example: clipy train ../shared/datasets/fashion-product-images-small --out my-model
    Use it with: clipy ingest CATALOG --encoder fashion-mini:my-model
    """
    with _user_errors():
        from clipy_qdrant.encoders.train import train_fashion_encoder
        from ingest.readers import NAME_TEXT_TEMPLATE, open_catalog

        # Captions are product names (the attribute phrases are added by training itself).
        products = open_catalog(
            catalog, images=images, text_template=text or NAME_TEXT_TEMPLATE, limit=limit
        )
        command = "clipy train " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else None
        report = train_fashion_encoder(products, out, epochs=epochs, seed=seed, command=command)
    _err(
        f"clipy: wrote {out} ({report.train_products:,} training products, {report.seconds:.0f} s)"
    )
    for name, value in report.metrics.items():
        _err(f"  held-out {name}: {value:.4f}")
