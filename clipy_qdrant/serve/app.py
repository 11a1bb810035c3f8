"""The HTTP API and search page: a FastAPI app over one :class:`~clipy_qdrant.search.Searcher`.

Handlers parse a request, make one library call and render its result; the searcher (its
store and encoder) is built once by the caller (``clipy serve`` or a test) and shared by
every request. Handlers are plain ``def`` functions, which FastAPI runs in its thread pool,
so encoding and engine calls never block the event loop.

Endpoints (every ``/v1`` one needs ``X-API-Key`` when a key is set):

- ``POST /v1/search``            JSON query: text, base64 image, like, filters, weights, page
- ``POST /v1/search/image``      the same with a multipart image upload
- ``GET  /v1/products/{id}``     a product's metadata
- ``GET  /v1/products/{id}/image``  its picture (thumbnail bytes, or a redirect to its URL)
- ``GET  /v1/facets``            value counts of indexed fields under a filter
- ``GET  /v1/info``              the store, encoder, fields and limits
- ``GET  /healthz``              liveness (never needs a key)
- ``GET  /``                     the search page (static files, no data, no key)
- ``GET  /docs``                 the OpenAPI documentation

Every error is JSON ``{"error": {"code": ..., "message": ...}}`` with a 4xx status for bad
input (a library ``ClipyError`` becomes 400, an unknown product 404, a schema violation 422,
a body over the limit 413, a missing or wrong key 401).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from clipy_qdrant.browse import ImageURL
from clipy_qdrant.config import Settings
from clipy_qdrant.errors import (
    ClipyError,
    ConfigError,
    EncoderError,
    FilterError,
    InputError,
    StoreError,
    UnknownFieldError,
    UnknownProductError,
)
from clipy_qdrant.fusion import FUSION_METHODS, FusionConfig, FusionMethod
from clipy_qdrant.query_rules import fusion_weights
from clipy_qdrant.search import Searcher
from clipy_qdrant.serve.images import IMAGE_FORMATS, check_image, decode_base64_image
from clipy_qdrant.serve.limits import BodyLimit
from clipy_qdrant.serve.models import (
    API_VERSION,
    ErrorResponse,
    FacetsResponse,
    FacetValue,
    Health,
    HitOut,
    InfoResponse,
    Limits,
    ProductResponse,
    SearchFields,
    SearchRequest,
    SearchResponse,
    display_name,
    request_filter,
)

log = logging.getLogger("clipy.serve")

STATIC = resources.files("clipy_qdrant.serve") / "static"

#: Library errors as HTTP statuses and error codes (the first matching class wins).
ERROR_STATUS: tuple[tuple[type[ClipyError], int, str], ...] = (
    (UnknownProductError, 404, "not_found"),
    (UnknownFieldError, 400, "unknown_field"),
    (FilterError, 400, "bad_filter"),
    (InputError, 400, "bad_input"),
    (ConfigError, 400, "bad_request"),
    (EncoderError, 400, "bad_input"),
    (StoreError, 503, "store_unavailable"),
)
HTTP_CODES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}
#: How long a client may cache a product picture (they change only on re-ingest).
IMAGE_MAX_AGE = 3600
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503)
}


@dataclass(frozen=True)
class ServeOptions:
    """What the app needs besides the searcher: its limits, key and allowed origins."""

    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    store_label: str = ""
    max_body_bytes: int = 12 * 1024 * 1024
    max_image_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 25_000_000
    max_k: int = 100
    max_depth: int = 1000

    @classmethod
    def from_settings(
        cls, settings: Settings, *, cors_origins: tuple[str, ...] = (), store_label: str = ""
    ) -> ServeOptions:
        return cls(
            api_key=settings.serve_api_key or None,
            cors_origins=cors_origins,
            store_label=store_label,
            max_body_bytes=settings.serve_max_body_bytes,
            max_image_bytes=settings.serve_max_image_bytes,
            max_image_pixels=settings.serve_max_image_pixels,
            max_k=settings.serve_max_k,
            max_depth=settings.serve_max_depth,
        )


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers or None
    )


def validation_message(errors: Any) -> str:
    """One line for pydantic's list of errors: ``field: problem; ...``."""
    parts: list[str] = []
    filters_seen = False
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('ctx', {}).get('error', '')})")
            continue
        if loc[:1] == ["filters"]:
            # A union's errors (one per accepted form) say one thing: the form is wrong.
            if not filters_seen:
                parts.append(
                    "filters: give a list of 'FIELD=VALUE' strings or an object "
                    '{"field": value | [values] | {"gte": n, "lte": n, "not": [values]}}'
                )
            filters_seen = True
            continue
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    if len(parts) > 4:
        parts = [*parts[:4], f"and {len(parts) - 4} more"]
    return "; ".join(parts) or "the request is not valid"


def create_app(searcher: Searcher, options: ServeOptions | None = None) -> FastAPI:
    """The app serving ``searcher``. Nothing is opened or loaded here: the caller owns the
    searcher's store and closes it after the server stops."""
    opts = options or ServeOptions()
    app = FastAPI(
        title="clipy",
        version=API_VERSION,
        summary="Multimodal product search: text and image vectors fused with tunable weights.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.searcher = searcher
    app.state.options = opts
    facet_fields = list(searcher.facets(limit=1))

    # -- errors ------------------------------------------------------------------------------

    @app.exception_handler(ClipyError)
    def _clipy_error(request: Request, exc: ClipyError) -> JSONResponse:
        for kind, status, code in ERROR_STATUS:
            if isinstance(exc, kind):
                return error_response(status, code, str(exc))
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(500, "internal", str(exc))

    @app.exception_handler(RequestValidationError)
    def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(exc.errors()))

    @app.exception_handler(ValidationError)
    def _model_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no endpoint {request.url.path}; see /docs"
        return error_response(exc.status_code, code, message, **(exc.headers or {}))

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "internal", "internal error; the server log has the details")

    # -- the key -----------------------------------------------------------------------------

    def require_key(
        x_api_key: Annotated[str | None, Header(alias="X-API-Key", include_in_schema=False)] = None,
    ) -> None:
        if opts.api_key is None:
            return
        # Header values arrive decoded as latin-1: encoding back gives the bytes as sent.
        if x_api_key is None or not hmac.compare_digest(
            x_api_key.encode("latin-1"), opts.api_key.encode("utf-8")
        ):
            raise HTTPException(
                401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "X-API-Key"}
            )

    api = APIRouter(prefix=f"/{API_VERSION}", dependencies=[Depends(require_key)])

    # -- searching ---------------------------------------------------------------------------

    def run_search(
        text: str | None, image: bytes | None, like: str | None, fields: SearchFields
    ) -> SearchResponse:
        if fields.k > opts.max_k:
            raise InputError(f"k must be at most {opts.max_k} (got {fields.k})")
        if fields.offset + fields.k > opts.max_depth:
            raise InputError(
                f"offset + k must be at most {opts.max_depth} (got {fields.offset + fields.k})"
            )
        text = text if text and text.strip() else None
        if text is None and image is None and like is None:
            raise InputError("a search needs a text, an image or a product to search like")
        flt = request_filter(fields.filters, searcher.indexed_fields())
        fusion = FusionConfig.from_weights(
            fields.fusion, w_text=fields.w_text, w_image=fields.w_image, w_lexical=fields.w_lexical
        )
        start = time.perf_counter()
        result = searcher.search_page(
            text,
            image,
            like=like,
            filters=flt,
            k=fields.k,
            offset=fields.offset,
            fusion=fusion,
            diversity=fields.diversity,
            as_typed=fields.as_typed,
            code_queries=fields.code_rule,
        )
        hits = result.hits
        correction = result.correction
        took_ms = (time.perf_counter() - start) * 1000
        total = searcher.count(flt)
        end = fields.offset + fields.k
        more = len(hits) == fields.k and end < total and end < opts.max_depth
        return SearchResponse(
            hits=[
                HitOut(
                    product_id=h.product_id,
                    name=display_name(h.product_id, h.payload),
                    score=h.score,
                    text_score=h.text_score,
                    image_score=h.image_score,
                    image_penalty=h.image_penalty,
                    lexical_score=h.lexical_score,
                    image=image_path(h.product_id),
                    payload=h.payload,
                )
                for h in hits
            ],
            k=fields.k,
            offset=fields.offset,
            total=total,
            next_offset=end if more else None,
            took_ms=round(took_ms, 3),
            correction=correction.to_json()
            if correction is not None and correction.changed
            else None,
            weights=fusion_weights(result.fusion) if result.fusion is not None else None,
            rule=result.rule.to_json() if result.rule is not None else None,
        )

    def checked_image(data: bytes) -> bytes:
        check_image(data, max_bytes=opts.max_image_bytes, max_pixels=opts.max_image_pixels)
        return data

    def rendered(result: SearchResponse) -> Response:
        """The response as JSON, written by pydantic-core in one pass: the model was built and
        checked by ``run_search``, and FastAPI's own serialization of a returned model
        (validate, encode, ``json.dumps``) costs about 20 times as much CPU per page of hits.
        ``response_model`` still documents the schema."""
        return Response(result.model_dump_json(), media_type="application/json")

    @api.post("/search", response_model=SearchResponse, responses=ERRORS)
    def search(request: SearchRequest) -> Response:
        """Search by text, by a base64 image, like a stored product, or text with either."""
        image = None
        if request.image is not None:
            image = checked_image(decode_base64_image(request.image, opts.max_image_bytes))
        return rendered(run_search(request.text, image, request.like, request))

    @api.post("/search/image", response_model=SearchResponse, responses=ERRORS)
    def search_image(
        image: Annotated[UploadFile, File(description="JPEG, PNG, WebP or GIF.")],
        text: Annotated[str | None, Form(max_length=1000)] = None,
        filter: Annotated[
            list[str] | None, Form(description="CLI filter strings, repeatable.")
        ] = None,
        w_text: Annotated[float | None, Form()] = None,
        w_image: Annotated[float | None, Form()] = None,
        fusion: Annotated[FusionMethod, Form()] = "weighted",
        k: Annotated[int, Form(ge=1)] = 10,
        offset: Annotated[int, Form(ge=0)] = 0,
        diversity: Annotated[float | None, Form(ge=0.0, le=1.0)] = None,
    ) -> Response:
        """Search by an uploaded image (and optionally a text), with the fields of /v1/search."""
        data = image.file.read(opts.max_image_bytes + 1)
        fields = SearchFields(
            filters=filter or None,
            w_text=w_text,
            w_image=w_image,
            fusion=fusion,
            k=k,
            offset=offset,
            diversity=diversity,
        )
        return rendered(run_search(text, checked_image(data), None, fields))

    # -- browsing ----------------------------------------------------------------------------

    #: The picture route's path before and after the id, read once the routes exist:
    #: Starlette's ``url_path_for`` walks the routes on every call (about 35 µs, a
    #: millisecond per page of hits).
    image_route: list[str] = []

    def image_path(product_id: str) -> str:
        return quote(product_id, safe="").join(image_route)

    @api.get("/products/{product_id}", response_model=ProductResponse, responses=ERRORS)
    def product(product_id: str) -> ProductResponse:
        """A stored product's metadata."""
        payload = searcher.product(product_id)
        return ProductResponse(
            product_id=product_id,
            name=display_name(product_id, payload),
            image=image_path(product_id),
            payload=payload,
        )

    @api.get(
        "/products/{product_id}/image",
        responses={
            200: {"content": {t: {} for t in IMAGE_FORMATS.values()}},
            302: {"description": "The catalog's own image URL."},
            **ERRORS,
        },
        response_class=Response,
    )
    def product_image(
        product_id: str,
        if_none_match: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Response:
        """A product's picture: its stored thumbnail, or a redirect to the catalog's URL."""
        try:
            picture = searcher.product_image(product_id)
        except StoreError as exc:
            return error_response(404, "no_image", str(exc))
        cache = {"Cache-Control": f"public, max-age={IMAGE_MAX_AGE}"}
        if isinstance(picture, ImageURL):
            return RedirectResponse(picture.url, status_code=302, headers=cache)
        etag = '"' + hashlib.blake2b(picture.data, digest_size=12).hexdigest() + '"'
        if if_none_match == etag:
            return Response(status_code=304, headers={**cache, "ETag": etag})
        return Response(
            picture.data, media_type=picture.media_type, headers={**cache, "ETag": etag}
        )

    @api.get("/facets", response_model=FacetsResponse, responses=ERRORS)
    def facets(
        field: Annotated[
            list[str] | None, Query(description="Fields to count (default: every facet field).")
        ] = None,
        filter: Annotated[
            list[str] | None, Query(description="CLI filter strings, repeatable.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> FacetsResponse:
        """Counts of each field's most frequent values among the products matching the filters."""
        flt = request_filter(filter)
        counts = searcher.facets(field or None, flt, limit)
        return FacetsResponse(
            total=searcher.count(flt),
            facets={
                name: [FacetValue(value=c.value, count=c.count) for c in values]
                for name, values in counts.items()
            },
        )

    @api.get("/info", response_model=InfoResponse, responses=ERRORS)
    def info() -> InfoResponse:
        """The store, its encoder and fields, and this server's limits."""
        store = searcher.store
        encoder = store.encoder_info()
        return InfoResponse(
            api_version=API_VERSION,
            store=opts.store_label or repr(store),
            backend=type(store).__name__,
            encoder=None if encoder is None else {"name": encoder.name, "dim": encoder.dim},
            products=store.count(),
            indexed_fields=searcher.indexed_fields(),
            facet_fields=facet_fields,
            fusion_methods=list(FUSION_METHODS),
            hubness=searcher.hubness,
            auth=opts.api_key is not None,
            limits=Limits(
                max_k=opts.max_k,
                max_depth=opts.max_depth,
                max_body_bytes=opts.max_body_bytes,
                max_image_bytes=opts.max_image_bytes,
                max_image_pixels=opts.max_image_pixels,
                image_types=list(IMAGE_FORMATS.values()),
            ),
        )

    app.include_router(api)
    marker = "<product-id>"
    image_route.extend(app.url_path_for("product_image", product_id=marker).split(marker, 1))

    # -- unversioned: health and the page ----------------------------------------------------

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        """Liveness: the process answers (no key needed)."""
        return Health()

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    if opts.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(opts.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    app.add_middleware(BodyLimit, max_bytes=opts.max_body_bytes)
    return app
