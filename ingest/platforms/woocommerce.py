"""WooCommerce product CSV exports: variations folded into their parent (see
:mod:`ingest.platforms`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ingest.platforms.common import (
    Draft,
    PlatformCatalog,
    Row,
    RowBuilder,
    category_path,
    html_to_text,
    read_rows,
    split_terms,
)
from ingest.records import Product

#: WooCommerce's columns (the ``Attribute N`` pairs are found by pattern).
WOO_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("ID",),
    "type": ("Type",),
    "sku": ("SKU",),
    "name": ("Name",),
    "published": ("Published",),
    "short_description": ("Short description",),
    "description": ("Description",),
    "regular_price": ("Regular price",),
    "sale_price": ("Sale price",),
    "categories": ("Categories",),
    "tags": ("Tags",),
    "images": ("Images",),
    "parent": ("Parent",),
}
_WOO_ATTRIBUTE = re.compile(r"attribute (\d+) (name|value\(s\))")


def read_woocommerce(
    path: Path, *, text_template: str | None = None, limit: int | None = None
) -> PlatformCatalog:
    """The products of a WooCommerce product CSV export (see the module docstring)."""
    path = Path(path)
    rows, headers = read_rows(path, WOO_COLUMNS)
    attributes = sorted({int(m.group(1)) for n in headers if (m := _WOO_ATTRIBUTE.fullmatch(n))})
    builder = RowBuilder(path, headers, text_template)
    drafts: dict[str, Draft] = {}
    by_sku: dict[str, Draft] = {}
    variations: list[Row] = []
    for row in rows:
        kinds = {k.strip().casefold() for k in row.get("type").split(",")}
        if "variation" in kinds:
            variations.append(row)
            continue
        product_id = row.get("id") or row.get("sku")
        if not product_id:
            builder.issue(row, "id", "row has no ID and no SKU")
            continue
        if product_id in drafts:
            builder.issue(row, "id", f"duplicate ID {product_id}", product_id)
            continue
        draft = drafts[product_id] = Draft(product_id, row)
        if row.get("sku"):
            by_sku[row.get("sku")] = draft
        _woo_product_fields(builder, draft, row, attributes)
    for row in variations:
        parent = row.get("parent")
        found = (
            drafts.get(parent[3:].strip())
            if parent.casefold().startswith("id:")
            else by_sku.get(parent)
        )
        if found is None:
            reason = (
                "variation without a Parent"
                if not parent
                else f"no product {parent!r} in this file"
            )
            builder.issue(row, "parent", reason, row.get("id"))
            continue
        _woo_variant(builder, found, row, attributes)
    products: list[Product] = []
    for draft in drafts.values():
        if draft.error is not None:
            continue
        products.append(builder.product(draft, ("category_leaves", "tags")))
    builder.check_template(products)
    return PlatformCatalog(path, "woocommerce", products, builder.issues, limit)


def _woo_product_fields(
    builder: RowBuilder, draft: Draft, row: Row, attributes: Sequence[int]
) -> None:
    name = " ".join(row.get("name").split())
    if not name:
        draft.error = builder.issue(
            row, "name", f"product {draft.product_id} has no Name", draft.product_id
        )
        return
    paths = [p for p in (category_path(t) for t in split_terms(row.get("categories"))) if p]
    short = html_to_text(row.get("short_description"))
    long = html_to_text(row.get("description"))
    published = row.get("published")
    draft.fields.update(
        {
            "name": name,
            "description": " ".join(t for t in (short, long) if t),
            "categories": paths,
            "category_leaves": list(dict.fromkeys(p.rsplit(" > ", 1)[-1] for p in paths)),
            "tags": split_terms(row.get("tags")),
            "published": {"1": True, "0": False, "-1": False}.get(published),
            "status": {"1": "publish", "0": "private", "-1": "draft"}.get(published),
        }
    )
    for i, url in enumerate(split_terms(row.get("images"))):
        checked = builder.url(draft, row, url, "images")
        if checked is not None:
            draft.images.append((None, i, checked))
    _woo_variant(builder, draft, row, attributes)


def _woo_variant(builder: RowBuilder, draft: Draft, row: Row, attributes: Sequence[int]) -> None:
    regular = builder.price(draft, row, "regular_price", "regular_price")
    sale = builder.price(draft, row, "sale_price", "sale_price")
    price = sale if sale is not None else regular
    if price is not None:
        draft.prices.append(price)
    if sale is not None:
        draft.fields["on_sale"] = True
    if row.get("sku"):
        draft.skus.append(row.get("sku"))
    for n in attributes:
        name = row.get(f"attribute {n} name")
        for value in split_terms(row.get(f"attribute {n} value(s)")):
            draft.add_option(name, value)
    if row is not draft.first:
        for url in split_terms(row.get("images"))[:1]:
            checked = builder.url(draft, row, url, "images")
            if checked is not None:
                draft.images.append((None, 10**9 + len(draft.images), checked))
