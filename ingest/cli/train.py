"""``clipy train``: train the offline fashion encoder's heads.

Every option comes from :class:`~clipy_qdrant.training.config.TrainConfig` (one place for each
default, bound and help text); the common ones show in ``--help``, the rest under "Advanced".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ingest.cli.shell import app, build_settings, echo_err, user_errors


def _train_config_parameters() -> list[Any]:
    """One ``--option`` per :class:`~clipy_qdrant.training.TrainConfig` field, generated from
    the field: its default, help text and minimum; the uncommon ones under "Advanced"."""
    import dataclasses
    import inspect
    import typing

    from clipy_qdrant.training.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    params = []
    for field in dataclasses.fields(TrainConfig):
        flag = field.name.replace("_", "-")
        hint, default = hints[field.name], field.default
        if hint == tuple[float, ...]:  # a repeated option; None leaves TrainConfig's default
            hint, default = list[float] | None, None
        option = typer.Option(
            f"--{flag}/--no-{flag}" if hint is bool else f"--{flag}",
            help=field.metadata["help"],
            min=field.metadata["min"],
            rich_help_panel=None if field.metadata["common"] else "Advanced",
            show_default=default is not None,
        )
        params.append(
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[hint, option],
            )
        )
    return params


def _train_command_parameters() -> list[Any]:
    """The catalog options of ``clipy train`` and its evaluate-only mode."""
    import inspect

    def keyword(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> Any:
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )

    return [
        inspect.Parameter(
            "catalog",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[
                str,
                typer.Argument(help="The catalog to train on (any source clipy ingest reads)."),
            ],
        ),
        keyword(
            "out",
            Annotated[
                Path | None, typer.Option("--out", help="Model folder to write (heads, config).")
            ],
            None,
        ),
        keyword(
            "limit",
            Annotated[
                int | None, typer.Option("--limit", min=1, help="Use only the first N products.")
            ],
            None,
        ),
        keyword(
            "text",
            Annotated[
                str | None,
                typer.Option(
                    "--text",
                    help="Text template of the product caption (default: {productDisplayName}).",
                ),
            ],
            None,
        ),
        keyword(
            "images",
            Annotated[
                Path | None, typer.Option("--images", help="Image folder for a CSV/JSONL catalog.")
            ],
            None,
        ),
        keyword(
            "evaluate_model",
            Annotated[
                Path | None,
                typer.Option(
                    "--evaluate-model",
                    help="Train nothing: print the held-out metrics of this model folder.",
                    rich_help_panel="Advanced",
                ),
            ],
            None,
        ),
        keyword(
            "image_queries",
            Annotated[
                int,
                typer.Option(
                    "--image-queries",
                    min=0,
                    help="With --evaluate-model: image→image queries (0: every held-out product).",
                    rich_help_panel="Advanced",
                ),
            ],
            500,
        ),
    ]


def _train(
    catalog: str,
    out: Path | None,
    limit: int | None,
    text: str | None,
    images: Path | None,
    evaluate_model: Path | None,
    image_queries: int,
    **options: Any,
) -> None:
    """Train the offline fashion encoder's projection heads (CLIP loss, held-out split by id).

    Example: clipy train ../shared/datasets/fashion-product-images-small --out my-model
    Use it with: clipy ingest CATALOG --encoder fashion-mini:my-model
    """
    if out is None and evaluate_model is None:
        raise typer.BadParameter("--out is required (or --evaluate-model)")
    with user_errors():
        from clipy_qdrant.training import TrainConfig, evaluate_fashion_model, train_fashion_encoder
        from ingest.readers import NAME_TEXT_TEMPLATE, open_catalog

        if options.get("appearance_sweep") is None:
            options.pop("appearance_sweep", None)
        else:
            options["appearance_sweep"] = tuple(options["appearance_sweep"])
        config = TrainConfig(**options)
        # Captions are product names (the attribute phrases are added by training itself).
        products = open_catalog(
            catalog, images=images, text_template=text or NAME_TEXT_TEMPLATE, limit=limit
        )
        cache_dir = build_settings().cache_dir
        if evaluate_model is not None:
            metrics = evaluate_fashion_model(
                list(products),
                evaluate_model,
                cache_dir=cache_dir,
                seed=config.seed,
                image_queries=image_queries,
            )
            typer.echo(json.dumps(metrics, indent=2))
            return
        assert out is not None
        command = "clipy train " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else None
        report = train_fashion_encoder(products, out, config, cache_dir=cache_dir, command=command)
    echo_err(
        f"clipy: wrote {out} ({report.train_products:,} training products, {report.seconds:.0f} s)"
    )
    for name, value in report.metrics.items():
        echo_err(f"  held-out {name}: {value:.4f}")


def _train_command() -> Any:
    """``_train`` with a signature typer reads: the catalog options and one option per
    :class:`~clipy_qdrant.training.TrainConfig` field."""
    import functools
    import inspect

    @functools.wraps(_train)
    def train(**kwargs: Any) -> None:
        _train(**kwargs)

    train.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*_train_command_parameters(), *_train_config_parameters()]
    )
    train.__annotations__ = {}
    train.__name__ = "train"
    return train


train = app.command("train")(_train_command())


@app.command("train-query-words")
def train_query_words(
    catalog: Annotated[
        str, typer.Argument(help="The catalog to fit on (any source clipy ingest reads).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The table file to write (safetensors).")],
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Use only the first N products.")
    ] = None,
    text: Annotated[
        str | None,
        typer.Option(
            "--text", help="Text template of the product name (default: {productDisplayName})."
        ),
    ] = None,
) -> None:
    """Fit fashion-mini's query words table on the catalog's training products (never the
    held-out ones): word vectors whose mean approximates MiniLM's feature of a query.

    Example: clipy train-query-words ../shared/datasets/fashion-product-images-small
    --out clipy_qdrant/models/query-words.safetensors (the shipped table)
    """
    with user_errors():
        from clipy_qdrant.training.features import cached_text_features
        from clipy_qdrant.training.query_words import fit_query_words, write_query_words
        from ingest.readers import NAME_TEXT_TEMPLATE, open_catalog

        cache_dir = build_settings().cache_dir
        products = list(
            open_catalog(
                catalog, images=None, text_template=text or NAME_TEXT_TEMPLATE, limit=limit
            )
        )
        fit = fit_query_words(products, lambda texts: cached_text_features(texts, cache_dir))
        write_query_words(fit, out)
    cosines = ", ".join(f"{ridge:g}: {cos:.4f}" for ridge, cos in fit.validation_cosine.items())
    echo_err(
        f"clipy: wrote {out} ({len(fit.table.words):,} words from {fit.texts:,} texts; ridge "
        f"{fit.ridge:g}; validation fold cosine with MiniLM by ridge: {cosines})"
    )
