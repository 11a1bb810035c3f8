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
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

from clipy_qdrant.errors import InputError
from clipy_qdrant.store.base import FieldType
from ingest.fetch import check_url
from ingest.readers import render_template, template_fields
from ingest.records import Product

Platform = Literal["shopify", "woocommerce"]

#: The description is cut to about this many characters in the embedded text.
DESCRIPTION_CHARS = 300

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
    "image_position": ("image_position", "Image position"),
    "image_alt": ("Image Alt Text", "Image alt text"),
    "variant_image": ("Variant Image", "Variant image URL"),
    **{f"option{i}_name": (f"Option{i} Name",) for i in (1, 2, 3)},
    **{f"option{i}_value": (f"Option{i} Value",) for i in (1, 2, 3)},
}
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
_PRICE = re.compile(r"\d+(\.\d+)?|\d{1,3}(,\d{3})+(\.\d+)?")
_SLUG = re.compile(r"[^a-z0-9]+")
_TERM_SPLIT = re.compile(r"(?<!\\),")


def _key(name: str) -> str:
    return " ".join(name.replace("\ufeff", "").split()).casefold()


# --------------------------------------------------------------------------- detection


def detect_platform(header: Sequence[str]) -> Platform | None:
    """``"shopify"`` / ``"woocommerce"`` when a CSV header is that platform's export, else None."""
    names = {_key(h) for h in header}

    def has(aliases: tuple[str, ...]) -> bool:
        return any(_key(a) in names for a in aliases)

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


# --------------------------------------------------------------------------- values


class _TextExtractor(HTMLParser):
    # Block-level tags separate words; inline ones (b, span, a…) do not.
    _BREAKS = frozenset(
        "p br div li ul ol tr td th h1 h2 h3 h4 h5 h6 section article table blockquote".split()  # noqa: SIM905
    )
    _HIDDEN = frozenset({"script", "style", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self.hidden += 1
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment: tags dropped, entities unescaped, whitespace collapsed."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return " ".join("".join(parser.parts).split())


def parse_price(cell: str) -> float | None:
    """``"19.99"`` / ``"1,299.00"`` -> float; ``""`` -> None; anything else raises ValueError."""
    text = cell.strip()
    if not text:
        return None
    if not _PRICE.fullmatch(text):
        raise ValueError(f"bad price {cell!r}")
    return float(text.replace(",", ""))


def split_terms(cell: str) -> list[str]:
    """A comma-separated list (``\\,`` is a comma inside a term), stripped, empties dropped,
    duplicates dropped (first kept)."""
    terms = (t.replace("\\,", ",").strip() for t in _TERM_SPLIT.split(cell))
    return list(dict.fromkeys(t for t in terms if t))


def category_path(term: str) -> str:
    """``"Clothing>Tshirts "`` -> ``"Clothing > Tshirts"``."""
    return " > ".join(p.strip() for p in term.split(">") if p.strip())


def slug(name: str) -> str:
    return _SLUG.sub("_", name.casefold()).strip("_")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit].rsplit(" ", 1)[0]
    return head.rstrip(" ,;:.")


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class RowIssue:
    """A row (or one field of it) that could not be used, and why."""

    file: str
    row: int
    line: int
    field: str
    reason: str
    product_id: str = ""

    def message(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


@dataclass
class _Row:
    row: int
    line: int
    cells: dict[str, str]

    def get(self, name: str) -> str:
        return self.cells.get(name, "").strip()


@dataclass
class _Draft:
    """A product being assembled from its rows."""

    product_id: str
    first: _Row
    fields: dict[str, Any] = field(default_factory=dict)
    prices: list[float] = field(default_factory=list)
    compare_at: list[float] = field(default_factory=list)
    skus: list[str] = field(default_factory=list)
    options: dict[str, list[str]] = field(default_factory=dict)
    images: list[tuple[int | None, int, str]] = field(
        default_factory=list
    )  # (position, order, url)
    error: RowIssue | None = None

    def add_option(self, name: str, value: str) -> None:
        if name and value:
            values = self.options.setdefault(slug(name), [])
            if value not in values:
                values.append(value)


class PlatformCatalog:
    """The products of a platform export, in file order; iterate for :class:`Product` records.

    ``issues`` lists every :class:`RowIssue`; iterating yields them as products with ``error``
    set, after the products. ``total`` counts both, so the pipeline's progress bar is exact.
    """

    def __init__(
        self,
        path: Path,
        platform: Platform,
        products: list[Product],
        issues: list[RowIssue],
        limit: int | None = None,
    ) -> None:
        self.path = path
        self.source = str(path)
        self.kind = platform
        self.products = products
        self.issues = issues
        self.limit = limit

    def _records(self) -> list[Product]:
        bad = [
            Product(
                product_id=i.product_id,
                text="",
                row=i.row,
                line=i.line,
                source=i.file,
                error=i.message(),
            )
            for i in self.issues
        ]
        records = [*self.products, *bad]
        return records if self.limit is None else records[: self.limit]

    @property
    def total(self) -> int:
        return len(self._records())

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[Product]:
        return iter(self._records())

    def indexed_fields(self) -> dict[str, FieldType]:
        """Payload indexes for this export: keyword for string and string-list fields with
        few distinct values, float for prices, bool for flags."""
        kinds: dict[str, FieldType] = {}
        distinct: dict[str, set[str]] = {}
        for product in self.products:
            for key, value in product.metadata.items():
                if key in ("description", "name", "image_url", "image_urls", "skus"):
                    continue
                if isinstance(value, bool):
                    kinds[key] = "bool"
                elif isinstance(value, float):
                    kinds[key] = "float"
                elif isinstance(value, str | list):
                    kinds[key] = "keyword"
                    values = [value] if isinstance(value, str) else value
                    distinct.setdefault(key, set()).update(str(v) for v in values)
        many = max(50, len(self.products) // 2)
        return {k: v for k, v in sorted(kinds.items()) if len(distinct.get(k, ())) <= many}


def _read_rows(
    path: Path, columns: Mapping[str, tuple[str, ...]]
) -> tuple[list[_Row], dict[str, str]]:
    """Rows as ``{our name: cell}`` (other columns under their lower-cased header), and
    ``{our name: the file's header}`` for messages."""
    wanted = {_key(alias): name for name, aliases in columns.items() for alias in aliases}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise InputError(f"{path}: empty CSV file (no header row)")
            names = [wanted.get(_key(h), _key(h)) for h in header]
            headers = {
                name: h.replace("\ufeff", "").strip() for name, h in zip(names, header, strict=True)
            }
            rows: list[_Row] = []
            start = reader.line_num + 1
            for cells in reader:
                if any(c.strip() for c in cells):
                    rows.append(_Row(len(rows), start, dict(zip(names, cells, strict=False))))
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise InputError(f"{path} line {reader.line_num}: malformed CSV: {exc}") from None
    return rows, headers


class _Builder:
    """Shared by both platforms: issues, URL checks, prices and the final Product."""

    def __init__(self, path: Path, headers: Mapping[str, str], text_template: str | None) -> None:
        self.path = path
        self.headers = headers
        self.source = str(path)
        self.issues: list[RowIssue] = []
        self.text_template = text_template
        if text_template is not None:
            template_fields(text_template)  # refuses a malformed template now

    def issue(self, row: _Row, column: str, reason: str, product_id: str = "") -> RowIssue:
        found = RowIssue(
            self.source, row.row, row.line, self.headers.get(column, column), reason, product_id
        )
        self.issues.append(found)
        return found

    def price(self, draft: _Draft, row: _Row, name: str, column: str) -> float | None:
        try:
            return parse_price(row.get(name))
        except ValueError as exc:
            self.issue(row, column, str(exc), draft.product_id)
            return None

    def url(self, draft: _Draft, row: _Row, url: str, column: str) -> str | None:
        problem = check_url(url)
        if problem is None:
            return url
        self.issue(row, column, f"{problem}: {url!r}", draft.product_id)
        return None

    def product(self, draft: _Draft, text_fields: Sequence[str]) -> Product:
        # Fields named "_…" feed the text only; the rest is the payload.
        meta = {
            k: v
            for k, v in draft.fields.items()
            if v not in (None, "", []) and not k.startswith("_")
        }
        if draft.prices:
            meta["price_min"], meta["price_max"] = min(draft.prices), max(draft.prices)
        if draft.compare_at:
            meta["compare_at_price_max"] = max(draft.compare_at)
        for name, values in draft.options.items():
            meta[f"option_{name}"] = values
        if draft.skus:
            meta["skus"] = list(dict.fromkeys(draft.skus))
        ordered = sorted(draft.images, key=lambda i: (i[0] is None, i[0] or 0, i[1]))
        urls = list(dict.fromkeys(url for _, _, url in ordered))
        at_one = [url for position, _, url in draft.images if position == 1]
        first = at_one[0] if at_one else (draft.images[0][2] if draft.images else None)
        if first is not None:
            meta["image_url"] = first
            meta["image_urls"] = urls
        return Product(
            product_id=draft.product_id,
            text=self.text({**draft.fields, **meta}, text_fields),
            metadata=meta,
            row=draft.first.row,
            line=draft.first.line,
            source=self.source,
            image_url=first,
        )

    def text(self, meta: Mapping[str, Any], text_fields: Sequence[str]) -> str:
        if self.text_template is not None:
            context = {
                k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in meta.items()
            }
            return render_template(self.text_template, context)
        attributes: list[str] = []
        for name in text_fields:
            value = meta.get(name)
            for item in value if isinstance(value, list) else [value]:
                if item and str(item) not in attributes:
                    attributes.append(str(item))
        text = str(meta.get("name", ""))
        if attributes:
            text += ", " + " ".join(attributes)
        description = _cut(str(meta.get("description", "")), DESCRIPTION_CHARS)
        if description:
            text += ". " + description
        return text


# --------------------------------------------------------------------------- Shopify


def read_shopify(
    path: Path, *, text_template: str | None = None, limit: int | None = None
) -> PlatformCatalog:
    """The products of a Shopify product CSV export (see the module docstring)."""
    path = Path(path)
    rows, headers = _read_rows(path, SHOPIFY_COLUMNS)
    builder = _Builder(path, headers, text_template)
    drafts: dict[str, _Draft] = {}
    for row in rows:
        handle = row.get("handle") or slug(row.get("title")).replace("_", "-")
        if not handle:
            builder.issue(row, "handle", "row has no Handle and no Title")
            continue
        draft = drafts.get(handle)
        if draft is None:
            draft = drafts[handle] = _Draft(handle, row)
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
    return PlatformCatalog(path, "shopify", products, builder.issues, limit)


def _shopify_product_fields(draft: _Draft, row: _Row) -> None:
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


def _shopify_variant(builder: _Builder, draft: _Draft, row: _Row) -> None:
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


# --------------------------------------------------------------------------- WooCommerce


def read_woocommerce(
    path: Path, *, text_template: str | None = None, limit: int | None = None
) -> PlatformCatalog:
    """The products of a WooCommerce product CSV export (see the module docstring)."""
    path = Path(path)
    rows, headers = _read_rows(path, WOO_COLUMNS)
    attributes = sorted({int(m.group(1)) for n in headers if (m := _WOO_ATTRIBUTE.fullmatch(n))})
    builder = _Builder(path, headers, text_template)
    drafts: dict[str, _Draft] = {}
    by_sku: dict[str, _Draft] = {}
    variations: list[_Row] = []
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
        draft = drafts[product_id] = _Draft(product_id, row)
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
    return PlatformCatalog(path, "woocommerce", products, builder.issues, limit)


def _woo_product_fields(
    builder: _Builder, draft: _Draft, row: _Row, attributes: Sequence[int]
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


def _woo_variant(builder: _Builder, draft: _Draft, row: _Row, attributes: Sequence[int]) -> None:
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
