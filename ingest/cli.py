"""The ``clipy`` command: a thin shell over the library and the ingest pipeline.

Each command parses its flags, makes one library call and renders the result. Results go
to stdout (``--json`` output parses); progress, summaries and errors go to stderr. A
``ClipyError`` becomes one line ``clipy: error: …`` and exit status 1; usage errors exit 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from clipy_qdrant.config import DEFAULT_ENCODER, Settings
from clipy_qdrant.errors import ClipyError, InputError

if TYPE_CHECKING:
    from clipy_qdrant.encoders.base import Encoder
    from clipy_qdrant.fusion import FusionConfig
    from clipy_qdrant.search import Hit, Searcher
    from clipy_qdrant.store.base import VectorStore

# Nothing in clipy may reach the model hub at run time: the shipped models are local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

app = typer.Typer(
    name="clipy",
    help="Multimodal product search on Qdrant: ingest a catalog, search it by text and/or image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _err(message: str) -> None:
    typer.echo(message, err=True)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and exit status 1."""
    try:
        yield
    except ClipyError as exc:
        _err(f"clipy: error: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        _err("clipy: interrupted (work already stored is kept; re-run to resume)")
        raise typer.Exit(130) from None


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
    typer.Option("--collection", help="Collection name on a server (default: products)."),
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


def _open_store(
    store: Path | None, url: str | None, api_key: str | None, collection: str | None
) -> VectorStore:
    from clipy_qdrant.store import open_store

    settings = Settings()
    return open_store(
        store or settings.store,
        url=url or settings.qdrant_url,
        api_key=api_key or settings.api_key,
        collection=collection or settings.collection,
    )


def _encoder_spec(flag: str | None, store: VectorStore | None) -> str:
    """Flag > env > the encoder that wrote the store > the default."""
    spec = flag or Settings().encoder
    if spec:
        return spec
    info = store.encoder_info() if store is not None else None
    return info.name if info is not None else DEFAULT_ENCODER


def _load_encoder(spec: str) -> Encoder:
    from clipy_qdrant.encoders import get_encoder

    return get_encoder(spec)


# -- ingest ------------------------------------------------------------------------------


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
        str,
        typer.Option(
            "--image-pattern", help="Image file name in --images, formatted over the row."
        ),
    ] = "{id}.jpg",
    id_column: Annotated[
        str, typer.Option("--id-column", help="Column holding the product id.")
    ] = "id",
    text: Annotated[
        str | None,
        typer.Option(
            "--text",
            help='Text to embed, a template over the columns, e.g. "{productDisplayName} {articleType}" '
            '(default: "{productDisplayName}, {gender} {usage} {season} {articleType} {baseColour}"; '
            "attribute columns the catalog lacks are left out).",
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
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
    encoder: EncoderOpt = None,
) -> None:
    """Embed a catalog's images and texts and store them, resumably.

    Example: clipy ingest ../shared/datasets/fashion-product-images-small --limit 1000
    """
    with _user_errors():
        from ingest.pipeline import run_ingest
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
        vector_store = _open_store(store, qdrant_url, api_key, collection)
        try:
            if recreate:
                vector_store.delete_collection()
            spec = _encoder_spec(encoder, vector_store)
            _err(f"clipy: ingesting {source} with encoder {spec}")
            result = run_ingest(
                catalog,
                vector_store,
                _load_encoder(spec),
                batch_size=batch_size,
                force=force,
                report_path=report or Path("clipy-ingest-report.json"),
                build_index=not no_index,
            )
        finally:
            vector_store.close()
        for line in result.summary_lines():
            _err(line)


# -- search ------------------------------------------------------------------------------


def _render_hits(hits: list[Hit]) -> None:
    if not hits:
        typer.echo("no results")
        return
    typer.echo(f"{'#':>3}  {'score':>7}  {'text':>6}  {'image':>6}  {'id':<8}  name")
    for rank, hit in enumerate(hits, 1):
        name = hit.payload.get("productDisplayName") or hit.payload.get("name") or ""
        extras = ", ".join(
            str(hit.payload[key])
            for key in ("gender", "articleType", "baseColour", "year")
            if hit.payload.get(key) not in (None, "")
        )
        typer.echo(
            f"{rank:>3}  {hit.score:7.4f}  {hit.text_score:6.3f}  {hit.image_score:6.3f}  "
            f"{hit.product_id:<8}  {name}" + (f"  [{extras}]" if extras else "")
        )


def _batch_queries(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read query file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            query = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(query, dict):
            raise InputError(f"{path} line {number}: expected a JSON object")
        unknown = set(query) - {
            "text",
            "image",
            "filters",
            "k",
            "w_text",
            "w_image",
            "fusion",
            "id",
        }
        if unknown:
            raise InputError(f"{path} line {number}: unknown keys {sorted(unknown)}")
        if not query.get("text") and not query.get("image"):
            raise InputError(f"{path} line {number}: needs 'text' or 'image'")
        yield number, query


@app.command()
def search(
    text: Annotated[str | None, typer.Argument(help="Query text.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Query image file.")] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="FIELD=VALUE, FIELD=A,B (any of), FIELD!=VALUE, FIELD>=N, FIELD<N, FIELD=N..M; repeatable.",
        ),
    ] = None,
    w_text: Annotated[
        float | None, typer.Option("--w-text", help="Weight of the text vector.")
    ] = None,
    w_image: Annotated[
        float | None, typer.Option("--w-image", help="Weight of the image vector.")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--limit", min=1, help="Number of results.")] = 10,
    fusion: Annotated[str, typer.Option("--fusion", help="weighted | rrf | dbsf")] = "weighted",
    queries: Annotated[
        Path | None,
        typer.Option(
            "--queries",
            help="Batch mode: a JSONL file of queries; one JSON result list per line out.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print results as JSON on stdout.")
    ] = False,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
    encoder: EncoderOpt = None,
    hubness: HubnessOpt = None,
) -> None:
    """Search the catalog by text, by image, or both.

    Example: clipy search "red sneakers" --filter gender=Men --filter 'year>=2015' --w-image 0.7
    """
    if text is None and image is None and queries is None:
        raise typer.BadParameter("give a query text, --image PATH, or --queries FILE")
    with _user_errors():
        from clipy_qdrant.search import Searcher

        vector_store = _open_store(store, qdrant_url, api_key, collection)
        try:
            searcher = Searcher(
                vector_store,
                _load_encoder(_encoder_spec(encoder, vector_store)),
                hubness=hubness,
            )
            if queries is not None:
                _search_batch(
                    searcher,
                    queries,
                    default_k=k,
                    fusion=fusion,
                    w_text=w_text,
                    w_image=w_image,
                    as_json=as_json,
                )
                return
            config = _fusion_config(fusion, w_text, w_image)
            hits = searcher.search(text, image, filters=filters or None, k=k, fusion=config)
            if as_json:
                typer.echo(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False))
            else:
                _render_hits(hits)
        finally:
            vector_store.close()


def _fusion_config(method: str, w_text: float | None, w_image: float | None) -> FusionConfig:
    """Weights default to 0.5 each; one given alone implies the other as 1 - it."""
    from clipy_qdrant.fusion import FusionConfig

    if w_text is None and w_image is None:
        w_text = w_image = 0.5
    elif w_text is None:
        w_text = max(0.0, 1.0 - float(w_image or 0.0))
    elif w_image is None:
        w_image = max(0.0, 1.0 - w_text)
    return FusionConfig(method=method, w_text=w_text, w_image=w_image)  # type: ignore[arg-type]


def _search_batch(
    searcher: Searcher,
    path: Path,
    *,
    default_k: int,
    fusion: str,
    w_text: float | None,
    w_image: float | None,
    as_json: bool,
) -> None:
    parsed = list(_batch_queries(path))
    base_dir = path.parent
    images = [
        (base_dir / q["image"] if not Path(q["image"]).is_absolute() else Path(q["image"]))
        if q.get("image")
        else None
        for _, q in parsed
    ]
    vectors = searcher.embed_many([q.get("text") for _, q in parsed], images)
    for (number, query), vector in zip(parsed, vectors, strict=True):
        try:
            config = _fusion_config(
                query.get("fusion", fusion),
                query.get("w_text", w_text),
                query.get("w_image", w_image),
            )
            filters = query.get("filters") or None
            if isinstance(filters, str):
                filters = [filters]
            hits = searcher.search_vectors(
                vector, filters=filters, k=int(query.get("k", default_k)), fusion=config
            )
        except ClipyError as exc:
            raise InputError(f"{path} line {number}: {exc}") from None
        if as_json:
            typer.echo(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False))
        else:
            typer.echo(f"== line {number}: {query.get('text') or query.get('image')}")
            _render_hits(hits)


# -- info --------------------------------------------------------------------------------


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Show the store, its encoder, the number of products and the indexed fields.

    Example: clipy info --json
    """
    with _user_errors():
        settings = Settings()
        vector_store = _open_store(store, qdrant_url, api_key, collection)
        try:
            encoder_info = vector_store.encoder_info()
            details: dict[str, Any] = {
                "store": qdrant_url or settings.qdrant_url or str(store or settings.store),
                "backend": type(vector_store).__name__,
                "encoder": None
                if encoder_info is None
                else {"name": encoder_info.name, "dim": encoder_info.dim},
                "products": vector_store.count() if encoder_info is not None else 0,
                "indexed_fields": vector_store.indexed_fields() if encoder_info is not None else {},
            }
            hubness = vector_store.hubness_info()
            details["hubness"] = hubness.to_json() if hubness is not None else None
        finally:
            vector_store.close()
    if as_json:
        typer.echo(json.dumps(details))
        return
    enc = details["encoder"]
    typer.echo(f"store:          {details['store']} ({details['backend']})")
    typer.echo(
        f"encoder:        {enc['name'] + ' (' + str(enc['dim']) + '-d)' if enc else '(empty store)'}"
    )
    typer.echo(f"products:       {details['products']}")
    fields = details["indexed_fields"]
    typer.echo(
        "indexed fields: " + (", ".join(f"{k} ({v})" for k, v in sorted(fields.items())) or "none")
    )
    hub = details["hubness"]
    typer.echo(
        "hubness:        "
        + (
            f"{hub['points']} products, mean top-{hub['top']} cosine with {hub['bank']} "
            f"distinct texts (min {hub['minimum']})"
            if hub
            else "none (run clipy ingest to compute it)"
        )
    )


# -- train -------------------------------------------------------------------------------


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
    with _user_errors():
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
        cache_dir = Settings().cache_dir
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
    _err(
        f"clipy: wrote {out} ({report.train_products:,} training products, {report.seconds:.0f} s)"
    )
    for name, value in report.metrics.items():
        _err(f"  held-out {name}: {value:.4f}")


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


# -- eval --------------------------------------------------------------------------------

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


def _eval_searcher(
    store: Path | None,
    qdrant_url: str | None,
    api_key: str | None,
    collection: str | None,
    encoder: str | None,
    hubness: float | None = None,
) -> tuple[Any, Searcher]:
    from clipy_qdrant.search import Searcher

    vector_store = _open_store(store, qdrant_url, api_key, collection)
    try:
        return vector_store, Searcher(
            vector_store, _load_encoder(_encoder_spec(encoder, vector_store)), hubness=hubness
        )
    except BaseException:
        vector_store.close()
        raise


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
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
    encoder: EncoderOpt = None,
) -> None:
    """Generate query sets (known-item, category, attribute, image, composed) from the store.

    Example: clipy eval make-queries --out eval-queries
    """
    with _user_errors():
        from clipy_qdrant.eval.runner import make_query_files

        vector_store, searcher = _eval_searcher(store, qdrant_url, api_key, collection, encoder)
        try:
            paths = make_query_files(
                vector_store,
                out,
                encoder=searcher.encoder,
                seed=seed,
                heldout_only=False if all_products else None,
            )
        finally:
            vector_store.close()
    for kind, path in paths.items():
        _err(f"clipy: {kind}: {path}")


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
    with _user_errors():
        from clipy_qdrant.eval.queries import read_query_files
        from clipy_qdrant.eval.report import format_run, run_to_json, write_run_outputs
        from clipy_qdrant.eval.runner import run_eval, weight_grid
        from clipy_qdrant.filters import parse_filter

        method_list = [m.strip() for m in methods.split(",") if m.strip()]
        configs = weight_grid(step, method_list)
        parsed = read_query_files(queries)
        vector_store, searcher = _eval_searcher(
            store, qdrant_url, api_key, collection, encoder, hubness
        )
        try:
            run = run_eval(
                searcher,
                parsed,
                configs,
                ks=cutoffs,
                split=_split(split),
                filters=parse_filter(filters),
            )
        finally:
            vector_store.close()
        if out is not None:
            for kind, path in write_run_outputs(run, out).items():
                _err(f"clipy: {kind}: {path}")
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
    with _user_errors():
        from clipy_qdrant.eval.queries import read_query_files
        from clipy_qdrant.eval.report import ab_to_json, format_ab, write_per_query_csv
        from clipy_qdrant.eval.runner import parse_fusion_spec, run_ab
        from clipy_qdrant.filters import parse_filter

        config_a, config_b = parse_fusion_spec(a), parse_fusion_spec(b)
        parsed = read_query_files(queries)
        vector_store, searcher = _eval_searcher(
            store, qdrant_url, api_key, collection, encoder, hubness
        )
        try:
            result = run_ab(
                searcher, parsed, config_a, config_b, ks=cutoffs, split=_split(split),
                filters=parse_filter(filters), confidence=confidence, seed=seed,
            )  # fmt: skip
        finally:
            vector_store.close()
        if csv_path is not None:
            write_per_query_csv(result.run, csv_path)
    if as_json:
        typer.echo(json.dumps(ab_to_json(result)))
    else:
        typer.echo(format_ab(result))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
