"""The HTTP API's request and response models (pydantic), and the one conversion of a
request's filters to the library's :class:`~clipy_qdrant.filters.Filter`.

Filters come in two forms, which may not be mixed in one request:

- the CLI's syntax, a list of strings: ``["gender=Men", "year>=2015", "baseColour=Red,Blue"]``;
- a structured object, one key per field (AND of all)::

      {"gender": "Men",                       # equality
       "baseColour": ["Red", "Blue"],         # any of
       "year": {"gte": 2015, "lt": 2018},     # numeric range (gt, gte, lt, lte)
       "season": {"not": ["Summer"]}}         # none of (a value or a list)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clipy_qdrant.errors import FilterError
from clipy_qdrant.filters import Condition, Filter, Match, Range, Scalar, parse_filter
from clipy_qdrant.fusion import FusionMethod

#: The API's version: the path prefix of every endpoint (``/v1/...``) and ``/v1/info``'s
#: ``api_version``. A change that breaks a client gets a new prefix.
API_VERSION = "v1"

#: Payload keys tried in order for a product's display name (else its id).
DISPLAY_NAME_KEYS: tuple[str, ...] = ("productDisplayName", "title", "name")

ScalarValue = str | int | float | bool


class RangeSpec(BaseModel):
    """Bounds of a numeric field, or ``not``: the values a field must not have."""

    model_config = ConfigDict(extra="forbid")

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    not_: ScalarValue | list[ScalarValue] | None = Field(default=None, alias="not")


FieldRule = ScalarValue | list[ScalarValue] | RangeSpec
Filters = list[str] | dict[str, FieldRule]


def request_filter(
    filters: Filters | None, indexed: Mapping[str, str] | None = None
) -> Filter | None:
    """The library filter of a request's ``filters`` (either form); ``FilterError`` names the
    field or expression at fault. ``indexed`` (the store's ``{field: type}``) turns the values
    of integer fields given as strings into numbers, as the CLI syntax does."""
    if not filters:
        return None
    if isinstance(filters, list):
        return parse_filter(filters)
    must: list[Condition] = []
    must_not: list[Condition] = []
    for name, rule in filters.items():
        if isinstance(rule, RangeSpec):
            bounds = {k: v for k, v in rule.model_dump(exclude={"not_"}).items() if v is not None}
            if rule.not_ is not None:
                must_not.append(Match(name, _values(name, rule.not_, indexed)))
            elif not bounds:
                raise FilterError(
                    f"filter on {name!r}: give a value, a list of values, or an object with "
                    "gt, gte, lt, lte or not"
                )
            if bounds:
                must.append(Range(name, **bounds))
        else:
            must.append(Match(name, _values(name, rule, indexed)))
    return Filter(tuple(must), tuple(must_not))


def _values(
    name: str, rule: ScalarValue | list[ScalarValue], indexed: Mapping[str, str] | None
) -> tuple[Scalar, ...]:
    values = tuple(rule) if isinstance(rule, list) else (rule,)
    if not values:
        raise FilterError(f"filter on {name!r} has an empty list of values")
    if indexed is not None and indexed.get(name) == "integer":
        return tuple(_whole_number(name, v) for v in values)
    return values


def _whole_number(name: str, value: ScalarValue) -> int:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer():
        raise FilterError(f"filter on {name!r}: {name} needs a whole number, got {value!r}")
    return int(number)


def display_name(product_id: str, payload: dict[str, Any]) -> str:
    """What a result shows as the product's name."""
    for key in DISPLAY_NAME_KEYS:
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return str(product_id)


# -- requests -------------------------------------------------------------------------------


class SearchFields(BaseModel):
    """What every search takes besides its query."""

    model_config = ConfigDict(extra="forbid")

    filters: Filters | None = Field(
        default=None,
        description="CLI filter strings (['gender=Men', 'year>=2015']) or a structured object "
        '({"gender": "Men", "year": {"gte": 2015}, "baseColour": ["Red", "Blue"]}).',
    )
    w_text: float | None = Field(
        default=None,
        description="Weight of the text channel; given alone within [0, 1] and w_image is 1 "
        "minus it (default 0.5 each).",
    )
    w_image: float | None = Field(default=None, description="Weight of the image channel.")
    w_lexical: float | None = Field(
        default=None,
        description="Weight of the lexical (BM25) channel, outside the 1 - w rule (default 0.5; "
        "0 turns it off).",
    )
    as_typed: bool = Field(
        default=False, description="Search the text as typed, without spelling correction."
    )
    code_rule: bool | None = Field(
        default=None,
        description="Search a query that is only a product code without the text channel "
        "where the catalog holds the code (the response's rule says when it did); null: the "
        "server's setting (CLIPY_CODE_QUERIES, on by default).",
    )
    fusion: FusionMethod = Field(default="weighted", description="weighted | rrf | dbsf")
    k: int = Field(default=10, ge=1, description="Results per page (at most the server's max_k).")
    offset: int = Field(default=0, ge=0, description="Results to skip (paging).")
    diversity: float | None = Field(
        default=None, ge=0.0, le=1.0, description="MMR re-ordering: 0 fused order, 1 most diverse."
    )


class SearchRequest(SearchFields):
    """``POST /v1/search``: a text, an image (base64), a product to search like, or text with
    either of the last two."""

    text: str | None = Field(default=None, max_length=1000, description="Query text.")
    image: str | None = Field(
        default=None,
        description="Query image, base64 (a data: URL is accepted); JPEG, PNG, WebP or GIF.",
    )
    like: str | None = Field(
        default=None,
        max_length=200,
        description="Product id: more like this stored product (itself excluded).",
    )


# -- responses ------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable kind: bad_request, not_found, ...")
    message: str = Field(description="One line that names the problem.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class HitOut(BaseModel):
    product_id: str
    name: str = Field(description="Display name: productDisplayName, title or name, else the id.")
    score: float = Field(description="Fused score (its scale depends on the fusion method).")
    text_score: float = Field(description="Cosine of the text channel.")
    image_score: float = Field(description="Cosine of the image channel minus image_penalty.")
    image_penalty: float = Field(description="Hubness correction of a text query (0 if none).")
    lexical_score: float = Field(
        default=0.0, description="Normalised BM25 score of the lexical channel (0 if none)."
    )
    image: str = Field(description="Path of the product's picture on this server.")
    payload: dict[str, Any]


class SearchResponse(BaseModel):
    hits: list[HitOut]
    k: int
    offset: int
    total: int = Field(description="Products matching the filters (the searched set).")
    next_offset: int | None = Field(description="Offset of the next page, null on the last.")
    took_ms: float = Field(description="Time spent answering the query (encode, search, fuse).")
    correction: dict[str, Any] | None = Field(
        default=None,
        description='The spelling correction of the text when it changed: {"original", '
        '"corrected", "changes"}; search again with as_typed to use the original.',
    )
    weights: dict[str, Any] | None = Field(
        default=None,
        description='The fusion the search used: {"method", "w_text", "w_image", "w_lexical"} '
        "(those asked for unless a rule set them).",
    )
    rule: dict[str, Any] | None = Field(
        default=None,
        description='The query rule that set the weights, null if none: {"name", "reason", '
        '"weights"}; search again with code_rule false to use the weights asked for.',
    )


class FacetValue(BaseModel):
    value: str | int | bool
    count: int


class FacetsResponse(BaseModel):
    total: int = Field(description="Products matching the filters.")
    facets: dict[str, list[FacetValue]]


class ProductResponse(BaseModel):
    product_id: str
    name: str
    image: str
    payload: dict[str, Any]


class Limits(BaseModel):
    max_k: int
    max_depth: int
    max_body_bytes: int
    max_image_bytes: int
    max_image_pixels: int
    image_types: list[str]


class InfoResponse(BaseModel):
    api_version: str
    store: str
    backend: str
    encoder: dict[str, Any] | None
    products: int
    indexed_fields: dict[str, str]
    facet_fields: list[str]
    fusion_methods: list[str]
    hubness: float
    auth: bool = Field(description="Whether requests need an X-API-Key header.")
    limits: Limits


class Health(BaseModel):
    status: Literal["ok"] = "ok"
