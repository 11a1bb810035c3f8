"""``clipy search`` (one query, or a JSONL file of them) and ``clipy info``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from clipy_qdrant.errors import ClipyError, InputError
from ingest.cli.shell import (
    ApiKeyOpt,
    CollectionOpt,
    EncoderOpt,
    HubnessOpt,
    StoreOpt,
    UrlOpt,
    app,
    fusion_config,
    opened_searcher,
    opened_store,
    store_settings,
    user_errors,
)

if TYPE_CHECKING:
    from clipy_qdrant.query_rules import QueryRule
    from clipy_qdrant.search import Hit, Searcher
    from clipy_qdrant.spelling import Correction

#: The keys a line of a ``--queries`` file may hold.
BATCH_QUERY_KEYS = frozenset(
    {"text", "image", "filters", "k", "w_text", "w_image", "w_lexical", "fusion", "id"}
)


@app.command()
def search(
    text: Annotated[str | None, typer.Argument(help="Query text.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Query image file.")] = None,
    like: Annotated[
        str | None,
        typer.Option(
            "--like",
            help="Product id: search like this stored product (itself excluded); a query text "
            "then replaces its text side ('like this, but in red').",
        ),
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="FIELD=VALUE, FIELD=A,B (any of), FIELD!=VALUE, FIELD>=N, FIELD<N, FIELD=N..M; repeatable.",
        ),
    ] = None,
    w_text: Annotated[
        float | None,
        typer.Option(
            "--w-text",
            help="Weight of the text vector (given alone: within [0, 1], and the image "
            "weight is 1 minus it; default 0.5).",
        ),
    ] = None,
    w_image: Annotated[
        float | None,
        typer.Option(
            "--w-image",
            help="Weight of the image vector (given alone: within [0, 1], and the text "
            "weight is 1 minus it; default 0.5).",
        ),
    ] = None,
    w_lexical: Annotated[
        float | None,
        typer.Option(
            "--w-lexical",
            min=0.0,
            help="Weight of the lexical (BM25) channel, added to the text and image weights "
            "(default: the engine's; 0 turns it off).",
        ),
    ] = None,
    as_typed: Annotated[
        bool,
        typer.Option(
            "--as-typed", help="Search the query text as typed, without spelling correction."
        ),
    ] = False,
    code_rule: Annotated[
        bool,
        typer.Option(
            "--code-rule/--no-code-rule",
            help="Search a query that is only a product code without the text channel where "
            "the catalog holds the code (default on; CLIPY_CODE_QUERIES=0 turns it off).",
        ),
    ] = True,
    k: Annotated[int, typer.Option("-k", "--limit", min=1, help="Number of results.")] = 10,
    offset: Annotated[
        int, typer.Option("--offset", min=0, help="Skip this many results (paging).")
    ] = 0,
    diversity: Annotated[
        float | None,
        typer.Option(
            "--diversity",
            min=0.0,
            max=1.0,
            help="Spread near-duplicates apart (MMR, 0 = fused order, 1 = most diverse).",
        ),
    ] = None,
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

    More like a product: clipy search --like 15970 "in red"

    A misspelt query text is corrected against the catalog's words before searching; stderr
    says so ("showing results for …") and --as-typed searches the text as typed. With --json
    each hit then carries the correction (original, corrected, changes).

    A query that is only a product code ("A166") is searched without the text channel where
    the catalog holds the code; stderr says so, --json hits carry the rule and the weights
    used, and --no-code-rule searches it with the weights asked for.
    """
    if text is None and image is None and queries is None and like is None:
        raise typer.BadParameter("give a query text, --image PATH, --like ID or --queries FILE")
    config = fusion_config(fusion, w_text, w_image, w_lexical)
    with user_errors():
        settings = store_settings(store, qdrant_url, api_key, collection, encoder)
        with opened_searcher(settings, hubness) as searcher:
            if not code_rule:
                searcher.code_queries = False
            if queries is not None:
                _search_batch(
                    searcher,
                    queries,
                    default_k=k,
                    fusion=fusion,
                    w_text=w_text,
                    w_image=w_image,
                    w_lexical=w_lexical,
                    as_typed=as_typed,
                    as_json=as_json,
                )
                return
            result = searcher.search_page(
                text,
                image,
                like=like,
                filters=filters or None,
                k=k,
                offset=offset,
                fusion=config,
                diversity=diversity,
                as_typed=as_typed,
            )
            _announce(result.correction)
            _announce_rule(result.rule)
            if as_json:
                typer.echo(_hits_json(result.hits, result.correction, result.rule))
            else:
                _render_hits(result.hits)


def _announce(correction: Correction | None, where: str = "") -> None:
    """Tell stderr that the query was corrected, and how to search it as typed."""
    if correction is None or not correction.changed:
        return
    typer.echo(
        f"{where}showing results for {json.dumps(correction.corrected, ensure_ascii=False)}; "
        f"search {json.dumps(correction.original, ensure_ascii=False)} as typed with --as-typed",
        err=True,
    )
    sys.stderr.flush()


def _announce_rule(rule: QueryRule | None, where: str = "") -> None:
    """Tell stderr that a query rule set the fusion weights, and how to turn it off."""
    if rule is None:
        return
    weights = rule.fusion
    typer.echo(
        f"{where}{rule.name}: searched with w_text {weights.w_text:g}, w_image "
        f"{weights.w_image:g}, w_lexical {weights.w_lexical:g} ({rule.reason}); "
        "--no-code-rule searches with the weights asked for",
        err=True,
    )
    sys.stderr.flush()


def _hits_json(
    hits: list[Hit], correction: Correction | None, rule: QueryRule | None = None
) -> str:
    """The hits as a JSON list; each carries the correction when the text was corrected and
    the query rule (with the weights used) when one set the weights."""
    extra: dict[str, Any] = (
        {"correction": correction.to_json()} if correction and correction.changed else {}
    )
    if rule is not None:
        extra["rule"] = rule.to_json()
    return json.dumps([{**hit.to_dict(), **extra} for hit in hits], ensure_ascii=False)


def _render_hits(hits: list[Hit]) -> None:
    from ingest.schema import NAME_FIELD_KEY

    if not hits:
        typer.echo("no results")
        return
    typer.echo(f"{'#':>3}  {'score':>7}  {'text':>6}  {'image':>6}  {'lex':>5}  {'id':<8}  name")
    for rank, hit in enumerate(hits, 1):
        # The ingest records which payload field holds the name (title, productDisplayName…).
        name_field = hit.payload.get(NAME_FIELD_KEY) or "productDisplayName"
        name = hit.payload.get(name_field) or hit.payload.get("name") or ""
        extras = ", ".join(
            str(hit.payload[key])
            for key in ("gender", "articleType", "baseColour", "year")
            if hit.payload.get(key) not in (None, "")
        )
        typer.echo(
            f"{rank:>3}  {hit.score:7.4f}  {hit.text_score:6.3f}  {hit.image_score:6.3f}  "
            f"{hit.lexical_score:5.3f}  {hit.product_id:<8}  {name}"
            + (f"  [{extras}]" if extras else "")
        )


def _batch_queries(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, query)`` for each non-blank line, or ``(line number, reason)`` for a
    line that is not a valid query: one bad line never stops the batch."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read query file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"query file {path} is not UTF-8 text ({exc.reason})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        yield number, _batch_query(line)


def _batch_query(line: str) -> dict[str, Any] | str:
    """One line of a ``--queries`` file as a query, or the reason it is not one."""
    try:
        query = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        return f"not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})"
    if not isinstance(query, dict):
        return "expected a JSON object"
    unknown = set(query) - BATCH_QUERY_KEYS
    if unknown:
        return f"unknown keys {sorted(unknown)}"
    for key in ("text", "image", "fusion", "id"):
        if query.get(key) is not None and not isinstance(query[key], str | int):
            return f"{key!r} must be a string, got {type(query[key]).__name__}"
    if not query.get("text") and not query.get("image"):
        return "needs 'text' or 'image'"
    k = query.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        return f"'k' must be a whole number >= 1, got {k!r}"
    for key in ("w_text", "w_image"):
        value = query.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"{key!r} must be a number, got {value!r}"
    filters = query.get("filters")
    if filters is not None and not (
        isinstance(filters, str)
        or (isinstance(filters, list) and all(isinstance(f, str) for f in filters))
    ):
        return "'filters' must be a string or a list of strings"
    return query


def _search_batch(
    searcher: Searcher,
    path: Path,
    *,
    default_k: int,
    fusion: str,
    w_text: float | None,
    w_image: float | None,
    w_lexical: float | None,
    as_typed: bool,
    as_json: bool,
) -> None:
    """One output line per query line, in order; a line that fails gets an error object
    (``{"line": N, "error": "..."}``) in its place and the batch goes on. Each line's
    ``fusion``, ``w_text``, ``w_image`` and ``w_lexical`` replace the flags' for that line.
    Raises ``InputError`` at the end, naming the first failure, when any line failed."""
    from clipy_qdrant.fusion import FusionConfig

    parsed = list(_batch_queries(path))
    valid = [(n, q) for n, q in parsed if isinstance(q, dict)]
    base_dir = path.parent
    vectors = _embed_lines(searcher, base_dir, valid, as_typed=as_typed)
    failures: list[tuple[int, str]] = []
    for number, query in parsed:
        try:
            if isinstance(query, str):
                raise InputError(query)
            vector = vectors[number]
            if isinstance(vector, ClipyError):
                raise vector
            config = FusionConfig.from_weights(
                str(query.get("fusion", fusion)),
                w_text=query.get("w_text", w_text),
                w_image=query.get("w_image", w_image),
                w_lexical=query.get("w_lexical", w_lexical),
            )
            filters = query.get("filters") or None
            if isinstance(filters, str):
                filters = [filters]
            result = searcher.search_vectors_page(
                vector, filters=filters, k=int(query.get("k", default_k)), fusion=config
            )
        except ClipyError as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            failures.append((number, message))
            if as_json:
                typer.echo(json.dumps({"line": number, "error": message}, ensure_ascii=False))
            else:
                typer.echo(f"== line {number}: error: {message}")
            continue
        _announce(vector.correction, f"line {number}: ")
        _announce_rule(result.rule, f"line {number}: ")
        if as_json:
            typer.echo(_hits_json(result.hits, vector.correction, result.rule))
        else:
            typer.echo(f"== line {number}: {query.get('text') or query.get('image')}")
            _render_hits(result.hits)
    if failures:
        number, message = failures[0]
        more = (
            f" ({len(failures) - 1} more failed; see the output lines)" if len(failures) > 1 else ""
        )
        raise InputError(f"{path} line {number}: {message}{more}")


def _embed_lines(
    searcher: Searcher,
    base_dir: Path,
    queries: list[tuple[int, dict[str, Any]]],
    *,
    as_typed: bool = False,
) -> dict[int, Any]:
    """``{line: query vectors}`` for the valid lines, embedded in one batch; when the batch
    fails (e.g. one unreadable image), each line alone, so the failure stays on its line."""

    def image_of(query: dict[str, Any]) -> Path | None:
        if not query.get("image"):
            return None
        image = Path(str(query["image"]))
        return image if image.is_absolute() else base_dir / image

    def text_of(query: dict[str, Any]) -> str | None:
        return None if query.get("text") is None else str(query["text"])

    try:
        vectors = searcher.embed_many(
            [text_of(q) for _, q in queries], [image_of(q) for _, q in queries], as_typed=as_typed
        )
        return {n: v for (n, _), v in zip(queries, vectors, strict=True)}
    except ClipyError:
        out: dict[int, Any] = {}
        for number, query in queries:
            try:
                out[number] = searcher.embed_many(
                    [text_of(query)], [image_of(query)], as_typed=as_typed
                )[0]
            except ClipyError as exc:
                out[number] = exc
        return out


@app.command()
def facets(
    field: Annotated[
        list[str] | None,
        typer.Argument(help="Fields to count (default: every indexed keyword/integer field)."),
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", "-f", help="Count only products matching; as in search."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Values per field.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"field": [{"value", "count"}…]} as JSON.')
    ] = False,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Count the values of indexed fields, under the filters.

    Example: clipy facets baseColour -f gender=Women -f articleType=Tops
    """
    with user_errors():
        from clipy_qdrant.search import Searcher

        settings = store_settings(store, qdrant_url, api_key, collection)
        with opened_store(settings) as vector_store:
            counts = Searcher(vector_store, hubness=0).facets(field or None, filters or None, limit)
    if as_json:
        data = {name: [c.to_dict() for c in values] for name, values in counts.items()}
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    for name, values in counts.items():
        typer.echo(f"{name}:")
        for c in values:
            typer.echo(f"  {c.count:>7}  {c.value}")


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    store: StoreOpt = None,
    qdrant_url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Show the store, its encoder, the number of products, its layout (shards, quantization,
    storage, HNSW) and each indexed field with its type.

    Example: clipy info --json
    """
    with user_errors():
        settings = store_settings(store, qdrant_url, api_key, collection)
        with opened_store(settings) as vector_store:
            encoder_info = vector_store.encoder_info()
            details: dict[str, Any] = {
                "store": settings.qdrant_url or str(settings.store),
                "backend": type(vector_store).__name__,
                "hnsw_ef": vector_store.hnsw_ef,
                # The embedded engine's search pool; a server sizes its own (None).
                "search_threads": getattr(vector_store, "search_threads", None),
                "encoder": None
                if encoder_info is None
                else {"name": encoder_info.name, "dim": encoder_info.dim},
                "products": vector_store.count() if encoder_info is not None else 0,
                "indexed_fields": vector_store.indexed_fields() if encoder_info is not None else {},
            }
            hubness = vector_store.hubness_info()
            details["hubness"] = hubness.to_json() if hubness is not None else None
            options = vector_store.collection_options()
            details["collection_options"] = options.to_json() if options is not None else None
            layout = options.describe() if options is not None else "(empty store)"
            details["lexical"] = _lexical_details(vector_store) if encoder_info else None
            details["fused_vector"] = vector_store.has_fused() if encoder_info else None
    if as_json:
        typer.echo(json.dumps(details))
        return
    enc = details["encoder"]
    typer.echo(f"store:          {details['store']} ({details['backend']})")
    typer.echo(
        f"encoder:        {enc['name'] + ' (' + str(enc['dim']) + '-d)' if enc else '(empty store)'}"
    )
    typer.echo(f"products:       {details['products']}")
    threads = details["search_threads"]
    typer.echo(
        f"layout:         {layout}; search beam hnsw_ef {details['hnsw_ef']}"
        + (f", search threads {threads}" if threads else "")
    )
    fields = details["indexed_fields"]
    typer.echo(
        "indexed fields: "
        + (", ".join(f"{name} ({kind})" for name, kind in sorted(fields.items())) or "none")
    )
    hub = details["hubness"]
    typer.echo(
        "hubness:        "
        + (
            f"{hub['points']} products, mean top-{hub['top']} cosine with {hub['bank']} "
            f"distinct texts (min {hub['minimum']}, "
            + (
                f"low-hubness band below {hub['low']})"
                if hub.get("low") is not None
                else "no low-hubness band: corrected search uses the looser bound; "
                "run clipy ingest to record it)"
            )
            if hub
            else "none (run clipy ingest to compute it)"
        )
    )
    lex = details["lexical"]
    typer.echo(
        "lexical:        "
        + (
            f"BM25 over {lex['documents']} product texts, {lex['words']} words "
            f"(avg_len {lex['bm25']['avg_len']:.2f}); spelling correction on"
            if lex and lex["enabled"]
            else "off: " + (lex["reason"] if lex else "empty store")
        )
    )
    typer.echo(
        "fused vector:   "
        + (
            "empty store"
            if details["fused_vector"] is None
            else "yes: weighted fusion of text and image is one query on it"
            if details["fused_vector"]
            else "no: weighted fusion searches the text and image lists"
        )
    )


def _lexical_details(vector_store: Any) -> dict[str, Any]:
    """Whether the store has the lexical channel (BM25 + spelling) and its statistics."""
    if not vector_store.has_lexical():
        return {
            "enabled": False,
            "reason": "the store was created without the lexical vector; "
            "re-ingest with --recreate to add it",
        }
    params = vector_store.bm25_params()
    vocabulary = vector_store.vocabulary()
    if params is None or vocabulary is None:
        return {"enabled": False, "reason": "no vocabulary yet; run clipy ingest"}
    return {
        "enabled": True,
        "bm25": params.to_json(),
        "documents": vocabulary.documents,
        "words": len(vocabulary),
    }
