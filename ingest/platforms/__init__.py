"""Shop-platform product exports (Shopify, WooCommerce) read as catalogs, detected by header.

Both exports are CSV files with one row per variant; :func:`read_shopify` and
:func:`read_woocommerce` fold the rows into one :class:`~ingest.records.Product` per product,
whose image is a URL (``Product.image_url``, fetched by :mod:`ingest.fetch`).

**Shopify** (``Handle, Title, Body (HTML), Vendor, Product Category, Type, Tags, Published,
Option1 Name, Option1 Value, Variant SKU, Variant Price, Variant Compare At Price, Image Src,
Image Position, Image Alt Text, Status``; the newer export's names ``URL handle, Description,
SKU, Price, Compare-at price, Product image URL, Image position…`` are accepted too): rows are
grouped by Handle; the row with a Title gives the product fields, continuation rows add
variants and images. id = Handle (a row without one takes the slug of its Title); image = the
``Image Src`` at position 1, else the first one listed (else a variant image).

**WooCommerce** (``ID, Type, SKU, Name, Published, Short description, Description, Regular
price, Sale price, Categories, Tags, Images, Parent, Attribute N name, Attribute N value(s)``):
variation rows (Type ``variation``, Parent ``id:NN`` or a SKU) fold into their parent; id =
ID (else SKU); image = the first URL of ``Images``; categories ``"Clothing > Tshirts, Men"``
become the paths ``["Clothing > Tshirts", "Men"]`` and the leaves ``["Tshirts", "Men"]``.

Payload fields: ``name``, ``description`` (HTML stripped: tags removed, entities unescaped,
whitespace collapsed), ``price_min`` / ``price_max`` (floats over the variants; a variant's
price is its sale price when it has one), ``tags`` (a list: a filter ``tags=a,b`` matches any
of them), ``option_<name>`` lists (``option_size: ["S", "M", "L"]``), ``skus``, ``image_url``
and ``image_urls``; Shopify adds ``vendor``, ``product_type``, ``category``,
``compare_at_price_max``, ``published``, ``status``; WooCommerce adds ``categories``,
``category_leaves``, ``on_sale``, ``published``, ``status``.

The text to embed is ``"{name}, {attributes}. {description}"`` (attributes: product type,
vendor, category leaves, tags; the description cut to ``DESCRIPTION_CHARS`` at a word), or a
``text_template`` over the payload fields (lists joined by ``", "``).

A row that cannot be used (no Title, a price like ``"12,5x"``, an image URL that is not http(s),
an unknown Parent…) is a :class:`RowIssue` (file, line, field, reason); the catalog yields it as
a ``Product`` with ``error`` set, located at that row, so the pipeline reports it and goes on.
A bad variant row leaves its product stored from the good rows.

The readers live in :mod:`ingest.platforms.shopify` and :mod:`ingest.platforms.woocommerce`;
:mod:`ingest.platforms.common` holds what they share.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from clipy_qdrant.errors import InputError
from ingest.platforms.common import (
    DESCRIPTION_CHARS,
    Platform,
    PlatformCatalog,
    RowIssue,
    header_key,
    html_to_text,
    parse_price,
    split_terms,
)
from ingest.platforms.shopify import SHOPIFY_COLUMNS, read_shopify
from ingest.platforms.woocommerce import WOO_COLUMNS, read_woocommerce

__all__ = [
    "DESCRIPTION_CHARS",
    "SHOPIFY_COLUMNS",
    "WOO_COLUMNS",
    "Platform",
    "PlatformCatalog",
    "RowIssue",
    "detect_platform",
    "html_to_text",
    "open_platform_export",
    "parse_price",
    "read_header",
    "read_shopify",
    "read_woocommerce",
    "split_terms",
]


def detect_platform(header: Sequence[str]) -> Platform | None:
    """``"shopify"`` / ``"woocommerce"`` when a CSV header is that platform's export, else None."""
    names = {header_key(h) for h in header}

    def has(aliases: tuple[str, ...]) -> bool:
        return any(header_key(a) in names for a in aliases)

    shopify = SHOPIFY_COLUMNS
    if (
        has(shopify["handle"])
        and has(shopify["title"])
        and sum(has(shopify[k]) for k in ("body", "price", "option1_name", "image", "vendor")) >= 2
    ):
        return "shopify"
    woo = WOO_COLUMNS
    if (
        all(has(woo[k]) for k in ("id", "type", "name"))
        and sum(has(woo[k]) for k in ("sku", "regular_price", "images", "parent", "categories"))
        >= 2
    ):
        return "woocommerce"
    return None


def read_header(path: Path) -> list[str]:
    """The first row of a CSV file (``[]`` for an empty file)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the CSV header: {exc}") from None


def open_platform_export(
    path: Path, *, text_template: str | None = None, limit: int | None = None
) -> PlatformCatalog | None:
    """The platform catalog of ``path`` when its header is a known export, else ``None``."""
    platform = detect_platform(read_header(path))
    if platform == "shopify":
        return read_shopify(path, text_template=text_template, limit=limit)
    if platform == "woocommerce":
        return read_woocommerce(path, text_template=text_template, limit=limit)
    return None
