"""``clipy eval``: generate query sets, score fusion settings over them, A/B-test two settings."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from ingest.cli.shell import (
    ApiKeyOpt,
    CollectionOpt,
    EncoderOpt,
    HubnessOpt,
    StoreOpt,
    UrlOpt,
    app,
    echo_err,
    opened_searcher,
    store_settings,
    usage_errors,
    user_errors,
)

if TYPE_CHECKING:
    from PIL import Image

    from clipy_qdrant.eval.photo_queries import ImageLoader

eval_app = typer.Typer(
    help="Measure search quality on query sets and A/B-test fusion settings.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")

QueryFilesArg = Annotated[
    list[Path], typer.Argument(help="Query files (JSONL), e.g. eval-queries/*.jsonl.")
]
KsOpt = Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated (metrics @k).")]
SplitOpt = Annotated[
    str | None,
    typer.Option(
        "--split",
        help="Gallery of queries that name none: heldout | all (default: heldout if the encoder was trained on this catalog).",
    ),
]


def _split(value: str | None) -> Literal["all", "heldout"] | None:
    if value is None or value in ("all", "heldout"):
        return value  # type: ignore[return-value]
    raise typer.BadParameter(f"--split must be heldout or all, got {value!r}")


def _ks(spec: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(part) for part in spec.split(",") if part.strip()}))
    except ValueError:
        raise typer.BadParameter(
            f"--k must be whole numbers separated by commas, got {spec!r}"
        ) from None
    if not ks or ks[0] < 1:
        raise typer.BadParameter("--k values must be >= 1")
    return ks


def _catalog_images(source: Path) -> ImageLoader:
    """A loader of the catalog's images by product id (one pass over the catalog)."""
    from ingest.readers import open_catalog

    def load(ids: Collection[str]) -> dict[str, Image.Image]:
        wanted, images = set(ids), {}
        for product in open_catalog(source):
            if product.product_id in wanted and product.has_image and not product.error:
                images[product.product_id] = product.load_image()
                if len(images) == len(wanted):
                    break
        return images

    return load


@eval_app.command("make-queries")
def eval_make_queries(
    out: Annotated[Path, typer.Option("--out", help="Folder for the query files.")] = Path(
        "eval-queries"
    ),
    seed: Annotated[int, typer.Option("--seed", help="Random seed (reproducible sets).")] = 0,
    all_products: Annotated[
        bool,
        typer.Option("--all-products", help="Ask about every product, not only the held-out ones."),
    ] = False,
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog",
            help="The ingested catalog: its images make the shopper-photo sets (photo/photo.jsonl).",
        ),
    ] = None,
    photos: Annotated[
        int, typer.Option("--photos", min=1, help="Held-out products in the shopper-photo sets.")
    ] = 500,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
    encoder: EncoderOpt = None,
) -> None:
    """Generate query sets (known-item, category, attribute, image, composed) from the store;
    with --catalog also the shopper-photo sets (perturbed held-out images, written as JPEGs).

    Example: clipy eval make-queries --out eval-queries --catalog ../shared/datasets/fashion-product-images-small
    """
    with user_errors():
        from clipy_qdrant.eval.catalog_queries import QuerySetSizes
        from clipy_qdrant.eval.runner import make_query_files

        settings = store_settings(store, qdrant_url, api_key, collection, encoder)
        with opened_searcher(settings) as searcher:
            paths = make_query_files(
                searcher.store,
                out,
                encoder=searcher.encoder,
                seed=seed,
                heldout_only=False if all_products else None,
                sizes=QuerySetSizes(photo=photos),
                load_images=None if catalog is None else _catalog_images(catalog),
            )
    for kind, path in paths.items():
        echo_err(f"clipy: {kind}: {path}")


@eval_app.command("run")
def eval_run(
    queries: QueryFilesArg,
    step: Annotated[
        float,
        typer.Option("--step", min=0.01, max=1.0, help="w_image grid step (w_text = 1 - w_image)."),
    ] = 0.1,
    methods: Annotated[
        str, typer.Option("--methods", help="Fusion methods to sweep.")
    ] = "weighted,rrf,dbsf",
    lexical: Annotated[
        str,
        typer.Option(
            "--w-lexical",
            help="Lexical (BM25) weights to sweep, comma-separated (0: the vectors alone).",
        ),
    ] = "0,0.5",
    ks: KsOpt = "1,10",
    filters: Annotated[
        list[str] | None, typer.Option("--filter", "-f", help="Filter added to every query.")
    ] = None,
    split: SplitOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write table.txt, results.json, per_query.csv and a PNG plot here."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON on stdout.")
    ] = False,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
    encoder: EncoderOpt = None,
    hubness: HubnessOpt = None,
) -> None:
    """Score query sets over a grid of fusion weights and methods; report the best per set.

    Example: clipy eval run eval-queries/*.jsonl --step 0.1 --out eval-out
    """
    cutoffs = _ks(ks)
    with usage_errors():
        from clipy_qdrant.eval.runner import weight_grid

        try:
            lexical_weights = [float(w) for w in lexical.split(",") if w.strip()]
        except ValueError:
            raise typer.BadParameter(
                f"--w-lexical must be numbers separated by commas, got {lexical!r}"
            ) from None
        configs = weight_grid(
            step, [m.strip() for m in methods.split(",") if m.strip()], lexical=lexical_weights
        )
    with user_errors():
        from clipy_qdrant.eval.queries import read_query_files
        from clipy_qdrant.eval.report import format_run, run_to_json, write_run_outputs
        from clipy_qdrant.eval.runner import run_eval
        from clipy_qdrant.filters import parse_filter

        settings = store_settings(store, qdrant_url, api_key, collection, encoder)
        parsed = read_query_files(queries)
        with opened_searcher(settings, hubness) as searcher:
            run = run_eval(
                searcher,
                parsed,
                configs,
                ks=cutoffs,
                split=_split(split),
                filters=parse_filter(filters),
            )
        if out is not None:
            for kind, path in write_run_outputs(run, out).items():
                echo_err(f"clipy: {kind}: {path}")
    if as_json:
        typer.echo(json.dumps(run_to_json(run)))
    else:
        typer.echo(format_run(run))


@eval_app.command("ab")
def eval_ab(
    queries: QueryFilesArg,
    a: Annotated[
        str, typer.Option("--a", help="Setting A, e.g. w_image=0.5 or method=rrf,w_image=0.8.")
    ],
    b: Annotated[str, typer.Option("--b", help="Setting B.")],
    ks: KsOpt = "1,10",
    filters: Annotated[
        list[str] | None, typer.Option("--filter", "-f", help="Filter added to every query.")
    ] = None,
    split: SplitOpt = None,
    confidence: Annotated[float, typer.Option("--confidence", min=0.5, max=0.999)] = 0.95,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write per-query scores of A and B here.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the comparison as JSON on stdout.")
    ] = False,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
    encoder: EncoderOpt = None,
    hubness: HubnessOpt = None,
) -> None:
    """A/B-test two fusion settings: mean difference (B - A), bootstrap CI, p-value, wins/losses.

    Example: clipy eval ab eval-queries/attribute.jsonl --a w_image=0.5 --b w_image=0.8
    """
    cutoffs = _ks(ks)
    with usage_errors():
        from clipy_qdrant.eval.runner import parse_fusion_spec

        config_a, config_b = parse_fusion_spec(a), parse_fusion_spec(b)
    with user_errors():
        from clipy_qdrant.eval.queries import read_query_files
        from clipy_qdrant.eval.report import ab_to_json, format_ab, write_per_query_csv
        from clipy_qdrant.eval.runner import run_ab
        from clipy_qdrant.filters import parse_filter

        settings = store_settings(store, qdrant_url, api_key, collection, encoder)
        parsed = read_query_files(queries)
        with opened_searcher(settings, hubness) as searcher:
            result = run_ab(
                searcher, parsed, config_a, config_b, ks=cutoffs, split=_split(split),
                filters=parse_filter(filters), confidence=confidence, seed=seed,
            )  # fmt: skip
        if csv_path is not None:
            write_per_query_csv(result.run, csv_path)
    if as_json:
        typer.echo(json.dumps(ab_to_json(result)))
    else:
        typer.echo(format_ab(result))
