"""Shopify product CSV exports: rows grouped by Handle into products (see :mod:`ingest.platforms`)."""

from __future__ import annotations

from pathlib import Path

from ingest.platforms.common import (
    Draft,
    PlatformCatalog,
    Row,
    RowBuilder,
    category_path,
    html_to_text,
    read_rows,
    slug,
    split_terms,
)
from ingest.records import Product

#: Shopify's columns: our name -> the header names accepted (compared case-insensitively).
SHOPIFY_COLUMNS: dict[str, tuple[str, ...]] = {
    "handle": ("Handle", "URL handle"),
    "title": ("Title",),
    "body": ("Body (HTML)", "Description"),
    "vendor": ("Vendor",),
    "category": ("Product Category", "Product category"),
    "type": ("Type",),
    "tags": ("Tags",),
    "published": ("Published", "Published on online store"),
    "status": ("Status",),
    "sku": ("Variant SKU", "SKU"),
    "price": ("Variant Price", "Price"),
    "compare_at": ("Variant Compare At Price", "Compare-at price"),
    "image": ("Image Src", "Product image URL"),
    "image_position": ("Image Position", "Image position"),
    "image_alt": ("Image Alt Text", "Image alt text"),
    "variant_image": ("Variant Image", "Variant image URL"),
    **{f"option{i}_name": (f"Option{i} Name",) for i in (1, 2, 3)},
    **{f"option{i}_value": (f"Option{i} Value",) for i in (1, 2, 3)},
}


def read_shopify(
    path: Path, *, text_template: str | None = None, limit: int | None = None
) -> PlatformCatalog:
    """The products of a Shopify product CSV export (see the module docstring)."""
    path = Path(path)
    rows, headers = read_rows(path, SHOPIFY_COLUMNS)
    builder = RowBuilder(path, headers, text_template)
    drafts: dict[str, Draft] = {}
    for row in rows:
        handle = row.get("handle") or slug(row.get("title")).replace("_", "-")
        if not handle:
            builder.issue(row, "handle", "row has no Handle and no Title")
            continue
        draft = drafts.get(handle)
        if draft is None:
            draft = drafts[handle] = Draft(handle, row)
        if row.get("title") and "name" not in draft.fields:
            _shopify_product_fields(draft, row)
        _shopify_variant(builder, draft, row)
    products: list[Product] = []
    for draft in drafts.values():
        if "name" not in draft.fields:
            builder.issue(
                draft.first, "title", f"product {draft.product_id} has no Title", draft.product_id
            )
            continue
        products.append(
            builder.product(draft, ("product_type", "vendor", "_category_leaf", "tags"))
        )
    builder.check_template(products)
    return PlatformCatalog(path, "shopify", products, builder.issues, limit)


def _shopify_product_fields(draft: Draft, row: Row) -> None:
    category = category_path(row.get("category"))
    published = row.get("published").casefold()
    draft.fields.update(
        {
            "name": " ".join(row.get("title").split()),
            "description": html_to_text(row.get("body")),
            "vendor": row.get("vendor"),
            "product_type": row.get("type"),
            "category": category,
            "_category_leaf": category.rsplit(" > ", 1)[-1] if category else "",
            "tags": split_terms(row.get("tags")),
            "published": {"true": True, "false": False}.get(published),
            "status": row.get("status").casefold(),
        }
    )
    for i in (1, 2, 3):
        name = row.get(f"option{i}_name")
        if name:
            draft.fields[f"_option{i}"] = name


def _shopify_variant(builder: RowBuilder, draft: Draft, row: Row) -> None:
    has_variant = bool(row.get("price") or row.get("sku") or row.get("option1_value"))
    if has_variant:
        price = builder.price(draft, row, "price", "price")
        if price is not None:
            draft.prices.append(price)
        compare = builder.price(draft, row, "compare_at", "compare_at")
        if compare is not None:
            draft.compare_at.append(compare)
        if row.get("sku"):
            draft.skus.append(row.get("sku"))
        for i in (1, 2, 3):
            name = row.get(f"option{i}_name") or draft.fields.get(f"_option{i}", "")
            value = row.get(f"option{i}_value")
            # A product without options has the single option "Title: Default Title".
            if name and value and (name, value) != ("Title", "Default Title"):
                draft.add_option(name, value)
    src = row.get("image")
    if src:
        position: int | None = None
        raw = row.get("image_position")
        if raw:
            if raw.isdigit() and int(raw) >= 1:
                position = int(raw)
            else:
                builder.issue(
                    row, "image_position", f"not a position (1, 2, …): {raw!r}", draft.product_id
                )
        url = builder.url(draft, row, src, "image")
        if url is not None:
            draft.images.append((position, len(draft.images), url))
    variant_image = row.get("variant_image")
    if variant_image and not src:
        url = builder.url(draft, row, variant_image, "variant_image")
        if url is not None:
            # Variant images come after every product image.
            draft.images.append((10**9, len(draft.images), url))
