"""Shopify and WooCommerce exports: detection, folding variants, images, issues; exports built
from the shared catalog, their images served on loopback, fetched and ingested."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fake_encoder import FakeEncoder
from http_fixture import Reply, ScriptedServer, serve
from PIL import Image

from clipy_qdrant.config import Settings
from clipy_qdrant.errors import ConfigError
from clipy_qdrant.filters import Filter, Match, Range
from clipy_qdrant.store import open_store
from ingest.catalog import Catalog
from ingest.fetch import ImageFetcher, ImageURLCatalog
from ingest.pipeline import BAD_ROW, run_ingest
from ingest.platforms import (
    RowIssue,
    detect_platform,
    html_to_text,
    open_platform_export,
    parse_price,
    read_shopify,
    read_woocommerce,
    split_terms,
)

SHOPIFY_HEADER = [
    "Handle",
    "Title",
    "Body (HTML)",
    "Vendor",
    "Product Category",
    "Type",
    "Tags",
    "Published",
    "Option1 Name",
    "Option1 Value",
    "Variant SKU",
    "Variant Price",
    "Variant Compare At Price",
    "Image Src",
    "Image Position",
    "Image Alt Text",
    "Status",
]
WOO_HEADER = [
    "ID",
    "Type",
    "SKU",
    "Name",
    "Published",
    "Short description",
    "Description",
    "Regular price",
    "Sale price",
    "Categories",
    "Tags",
    "Images",
    "Parent",
    "Attribute 1 name",
    "Attribute 1 value(s)",
]


def write_export(path: Path, header: Sequence[str], rows: Sequence[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(header))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 32), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    yield from serve()


def by_id(catalog: Any) -> dict[str, Any]:
    return {p.product_id: p for p in catalog if p.error is None}


# --------------------------------------------------------------------------- detection


def test_detect_platform_by_header():
    assert detect_platform(SHOPIFY_HEADER) == "shopify"
    newer = ["Title", "URL handle", "Description", "Vendor", "SKU", "Price", "Product image URL"]
    assert detect_platform(newer) == "shopify"
    assert detect_platform(["\ufeffhandle", " TITLE ", "body (html)", "variant price"]) == "shopify"
    assert detect_platform(WOO_HEADER) == "woocommerce"
    assert detect_platform(["id", "gender", "productDisplayName", "articleType"]) is None
    assert detect_platform(["Handle", "Title"]) is None  # too little to tell
    assert detect_platform(["ID", "Type", "Name"]) is None
    assert detect_platform([]) is None


def test_open_platform_export_picks_the_reader(tmp_path: Path):
    shop = write_export(tmp_path / "s.csv", SHOPIFY_HEADER, [{"Handle": "a", "Title": "A"}])
    woo = write_export(tmp_path / "w.csv", WOO_HEADER, [{"ID": "1", "Type": "simple", "Name": "B"}])
    other = tmp_path / "styles.csv"
    other.write_text("id,productDisplayName\n1,x\n", encoding="utf-8")
    assert [p.product_id for p in open_platform_export(shop) or []] == ["a"]
    shop_catalog = open_platform_export(shop)
    assert shop_catalog is not None and shop_catalog.kind == "shopify"
    woo_catalog = open_platform_export(woo)
    assert woo_catalog is not None and woo_catalog.kind == "woocommerce"
    assert open_platform_export(other) is None
    limited = read_shopify(shop, limit=0)
    assert isinstance(limited, Catalog) and limited.total == 0 and list(limited) == []


# --------------------------------------------------------------------------- values


def test_html_to_text_strips_tags_unescapes_and_collapses():
    markup = (
        "<p>Soft &amp; light<br>cotton&nbsp;tee</p>\n<ul><li>Fit: <b>slim</b></li>"
        "<li>5&#8217;s</li></ul><script>track()</script><style>p{}</style>T&eacute;l&eacute;"
    )
    assert html_to_text(markup) == "Soft & light cotton tee Fit: slim 5’s Télé"
    assert html_to_text("plain  text\n here") == "plain text here"
    assert html_to_text("") == ""


@pytest.mark.parametrize(
    ("cell", "value"), [("19.99", 19.99), (" 5 ", 5.0), ("1,299.00", 1299.0), ("", None)]
)
def test_parse_price(cell: str, value: float | None):
    assert parse_price(cell) == value


@pytest.mark.parametrize("cell", ["12,5x", "12,5", "-3", "abc", "1.2.3", "$5"])
def test_parse_price_refuses(cell: str):
    with pytest.raises(ValueError, match="bad price"):
        parse_price(cell)


def test_split_terms_keeps_escaped_commas_and_drops_duplicates():
    assert split_terms("a, b ,, a, c\\, d") == ["a", "b", "c, d"]
    assert split_terms("") == []


# --------------------------------------------------------------------------- Shopify


def shopify_rows(img: str = "http://img.example/") -> list[dict[str, Any]]:
    return [
        {
            "Handle": "soft-tee",
            "Title": "Soft Tee",
            "Body (HTML)": "<p>Soft &amp; light <em>organic</em> cotton.</p>",
            "Vendor": "Acme",
            "Product Category": "Apparel & Accessories > Clothing > Shirts & Tops",
            "Type": "T-Shirts",
            "Tags": "summer, cotton, Men",
            "Published": "TRUE",
            "Option1 Name": "Size",
            "Option1 Value": "S",
            "Variant SKU": "TEE-S",
            "Variant Price": "10.00",
            "Variant Compare At Price": "15.00",
            "Image Src": img + "tee-2.jpg",
            "Image Position": "2",
            "Image Alt Text": "back",
            "Status": "active",
        },
        # Continuation rows: only the Handle and variant / image fields.
        {
            "Handle": "soft-tee",
            "Option1 Value": "M",
            "Variant SKU": "TEE-M",
            "Variant Price": "12",
            "Image Src": img + "tee-1.jpg",
            "Image Position": "1",
        },
        {
            "Handle": "soft-tee",
            "Option1 Value": "L",
            "Variant SKU": "TEE-L",
            "Variant Price": "14.50",
        },
        {"Handle": "soft-tee", "Image Src": img + "tee-3.jpg", "Image Position": "3"},
        {
            "Handle": "plain-cap",
            "Title": "Plain Cap",
            "Vendor": "Acme",
            "Type": "Hats",
            "Option1 Name": "Title",
            "Option1 Value": "Default Title",
            "Variant Price": "5",
            "Image Src": img + "cap-b.jpg",
        },
        {"Handle": "plain-cap", "Image Src": img + "cap-a.jpg"},
    ]


def test_shopify_rows_fold_into_products(tmp_path: Path):
    path = write_export(tmp_path / "products_export.csv", SHOPIFY_HEADER, shopify_rows())
    catalog = read_shopify(path)
    assert catalog.issues == []
    assert catalog.total == 2
    products = by_id(catalog)
    assert list(products) == ["soft-tee", "plain-cap"]
    tee = products["soft-tee"]
    assert (tee.source, tee.row, tee.line) == (str(path), 0, 2)
    assert tee.image_url == "http://img.example/tee-1.jpg"  # position 1, though listed second
    assert tee.has_image is False  # until ingest.fetch resolves the URL
    assert tee.metadata == {
        "name": "Soft Tee",
        "description": "Soft & light organic cotton.",
        "vendor": "Acme",
        "product_type": "T-Shirts",
        "category": "Apparel & Accessories > Clothing > Shirts & Tops",
        "tags": ["summer", "cotton", "Men"],
        "published": True,
        "status": "active",
        "price_min": 10.0,
        "price_max": 14.5,
        "compare_at_price_max": 15.0,
        "option_size": ["S", "M", "L"],
        "skus": ["TEE-S", "TEE-M", "TEE-L"],
        "image_url": "http://img.example/tee-1.jpg",
        "image_urls": [f"http://img.example/tee-{i}.jpg" for i in (1, 2, 3)],
    }
    assert tee.text == (
        "Soft Tee, T-Shirts Acme Shirts & Tops summer cotton Men. Soft & light organic cotton."
    )
    cap = products["plain-cap"]
    # No positions: the first image listed; the default "Title" option is no option.
    assert cap.image_url == "http://img.example/cap-b.jpg"
    assert cap.metadata["price_min"] == cap.metadata["price_max"] == 5.0
    assert not any(k.startswith("option_") for k in cap.metadata)
    assert cap.text == "Plain Cap, Hats Acme"


def test_shopify_bad_rows_are_reported_with_file_line_and_field(tmp_path: Path):
    rows = shopify_rows()
    rows[1]["Variant Price"] = "12,5x"
    rows[2]["Image Src"] = "file:///etc/passwd"
    rows[3]["Image Position"] = "first"
    rows += [
        {"Handle": "ghost", "Option1 Value": "S", "Variant Price": "3"},  # no Title anywhere
        {"Handle": "", "Title": "", "Variant Price": "1"},
        {"Handle": "nohandle", "Title": "Bag", "Image Src": "not a url"},
    ]
    path = write_export(tmp_path / "p.csv", SHOPIFY_HEADER, rows)
    catalog = read_shopify(path)
    issues = {(i.line, i.field): i for i in catalog.issues}
    assert set(issues) == {
        (3, "Variant Price"),
        (4, "Image Src"),
        (5, "Image Position"),
        (8, "Title"),
        (9, "Handle"),
        (10, "Image Src"),
    }
    assert issues[(3, "Variant Price")] == RowIssue(
        str(path), 1, 3, "Variant Price", "bad price '12,5x'", "soft-tee"
    )
    assert issues[(4, "Image Src")].reason == (
        "unsupported URL scheme 'file' (only http and https): 'file:///etc/passwd'"
    )
    assert issues[(8, "Title")].reason == "product ghost has no Title"
    assert issues[(9, "Handle")].reason == "row has no Handle and no Title"
    # The bad variant row leaves the product stored from the good rows.
    products = by_id(catalog)
    assert sorted(products) == ["nohandle", "plain-cap", "soft-tee"]
    assert products["soft-tee"].metadata["price_min"] == 10.0
    assert products["soft-tee"].metadata["price_max"] == 14.5
    assert products["nohandle"].image_url is None
    # Issues come out as error products, located, for the pipeline's report.
    errors = [p for p in catalog if p.error is not None]
    assert len(errors) == 6 and catalog.total == 9
    assert {(p.line, p.error) for p in errors} >= {(3, "Variant Price: bad price '12,5x'")}


def test_shopify_newer_export_names(tmp_path: Path):
    header = ["Title", "URL handle", "Description", "Vendor", "SKU", "Price", "Product image URL"]
    rows = [
        {
            "Title": "Tote",
            "URL handle": "tote",
            "Description": "<b>Big</b>",
            "Vendor": "Co",
            "SKU": "T1",
            "Price": "7.5",
            "Product image URL": "https://cdn.example/tote.png",
        },
        {"URL handle": "tote", "SKU": "T2", "Price": "x"},
    ]
    catalog = read_shopify(write_export(tmp_path / "new.csv", header, rows))
    tote = by_id(catalog)["tote"]
    assert tote.metadata["description"] == "Big" and tote.metadata["price_max"] == 7.5
    assert tote.image_url == "https://cdn.example/tote.png"
    assert [(i.field, i.reason) for i in catalog.issues] == [("Price", "bad price 'x'")]


def test_text_template_over_payload_fields(tmp_path: Path):
    path = write_export(tmp_path / "p.csv", SHOPIFY_HEADER, shopify_rows())
    tee = by_id(read_shopify(path, text_template="{name} by {vendor}: {tags}"))["soft-tee"]
    assert tee.text == "Soft Tee by Acme: summer, cotton, Men"
    assert by_id(read_shopify(path, text_template="{id}: {name}"))["soft-tee"].text == (
        "soft-tee: Soft Tee"
    )
    with pytest.raises(ConfigError, match="'colour' is not a field of"):
        read_shopify(path, text_template="{name} {colour}")


# --------------------------------------------------------------------------- WooCommerce


def woo_rows(img: str = "http://img.example/") -> list[dict[str, Any]]:
    return [
        {
            "ID": "10",
            "Type": "variable",
            "SKU": "HOODIE",
            "Name": "Hoodie",
            "Published": "1",
            "Short description": "<p>Warm &amp; cosy</p>",
            "Description": "Fleece <strong>lined</strong>.",
            "Categories": "Clothing > Hoodies, Men, Sale\\, Winter",
            "Tags": "warm, fleece",
            "Images": f"{img}hoodie-1.jpg, {img}hoodie-2.jpg",
            "Attribute 1 name": "Size",
            "Attribute 1 value(s)": "S, M, L",
        },
        {"ID": "11", "Type": "variation", "SKU": "HOODIE-S", "Name": "Hoodie - S",
         "Regular price": "40", "Parent": "id:10", "Attribute 1 name": "Size",
         "Attribute 1 value(s)": "S"},
        {"ID": "12", "Type": "variation", "SKU": "HOODIE-M", "Name": "Hoodie - M",
         "Regular price": "45", "Sale price": "35", "Parent": "HOODIE",
         "Attribute 1 name": "Size", "Attribute 1 value(s)": "M"},
        {"ID": "13", "Type": "variation", "SKU": "HOODIE-L", "Name": "Hoodie - L",
         "Regular price": "50", "Parent": "id:10", "Images": f"{img}hoodie-l.jpg"},
        {"ID": "20", "Type": "simple, virtual", "SKU": "CARD", "Name": "Gift card",
         "Published": "0", "Regular price": "25", "Categories": "Gifts",
         "Images": f"{img}card.png"},
    ]  # fmt: skip


def test_woocommerce_variations_fold_into_their_parent(tmp_path: Path):
    path = write_export(tmp_path / "wc-product-export.csv", WOO_HEADER, woo_rows())
    catalog = read_woocommerce(path)
    assert catalog.issues == []
    products = by_id(catalog)
    assert list(products) == ["10", "20"]
    hoodie = products["10"]
    assert hoodie.image_url == "http://img.example/hoodie-1.jpg"
    assert hoodie.metadata == {
        "name": "Hoodie",
        "description": "Warm & cosy Fleece lined.",
        "categories": ["Clothing > Hoodies", "Men", "Sale, Winter"],
        "category_leaves": ["Hoodies", "Men", "Sale, Winter"],
        "tags": ["warm", "fleece"],
        "published": True,
        "status": "publish",
        "on_sale": True,
        "price_min": 35.0,  # the sale price of M
        "price_max": 50.0,
        "option_size": ["S", "M", "L"],
        "skus": ["HOODIE", "HOODIE-S", "HOODIE-M", "HOODIE-L"],
        "image_url": "http://img.example/hoodie-1.jpg",
        "image_urls": [
            "http://img.example/hoodie-1.jpg",
            "http://img.example/hoodie-2.jpg",
            "http://img.example/hoodie-l.jpg",
        ],
    }
    assert hoodie.text == (
        "Hoodie, Hoodies Men Sale, Winter warm fleece. Warm & cosy Fleece lined."
    )
    card = products["20"]
    assert card.metadata["published"] is False and card.metadata["status"] == "private"
    assert card.metadata["price_min"] == card.metadata["price_max"] == 25.0
    assert card.metadata["categories"] == ["Gifts"]


def test_woocommerce_bad_rows_are_reported(tmp_path: Path):
    rows = woo_rows()
    rows[2]["Sale price"] = "12,5x"
    rows += [
        {
            "ID": "30",
            "Type": "variation",
            "Name": "Orphan",
            "Regular price": "1",
            "Parent": "id:99",
        },
        {"ID": "31", "Type": "variation", "Name": "Lost", "Regular price": "1"},
        {"ID": "40", "Type": "simple", "Name": "", "Regular price": "1"},
        {"ID": "", "Type": "simple", "SKU": "", "Name": "Nameless id"},
        {"ID": "20", "Type": "simple", "Name": "Again"},
        {
            "ID": "50",
            "Type": "simple",
            "Name": "Broken",
            "Images": "ftp://x/a.jpg, http://ok.example/b.jpg",
        },
    ]
    path = write_export(tmp_path / "w.csv", WOO_HEADER, rows)
    catalog = read_woocommerce(path)
    assert [(i.line, i.field, i.reason) for i in sorted(catalog.issues, key=lambda i: i.line)] == [
        (4, "Sale price", "bad price '12,5x'"),
        (7, "Parent", "no product 'id:99' in this file"),
        (8, "Parent", "variation without a Parent"),
        (9, "Name", "product 40 has no Name"),
        (10, "ID", "row has no ID and no SKU"),
        (11, "ID", "duplicate ID 20"),
        (12, "Images", "unsupported URL scheme 'ftp' (only http and https): 'ftp://x/a.jpg'"),
    ]
    products = by_id(catalog)
    assert sorted(products) == ["10", "20", "50"]
    assert products["20"].metadata["name"] == "Gift card"  # the first one wins
    assert products["50"].image_url == "http://ok.example/b.jpg"
    # M's bad sale price drops that row's price; its regular price still counts.
    assert products["10"].metadata["price_min"] == 40.0


# --------------------------------------------------------------------------- end to end


def test_shopify_export_fetched_and_ingested(tmp_path: Path, server: ScriptedServer):
    base = server.url("/img/")
    rows = shopify_rows(base)
    for name, colour in (("tee-1", (200, 0, 0)), ("tee-2", (0, 200, 0)), ("cap-b", (0, 0, 200))):
        server.route(f"/img/{name}.jpg", Reply(body=jpeg(colour)))
    rows.append({"Handle": "lost", "Title": "Lost", "Image Src": base + "gone.jpg"})
    path = write_export(tmp_path / "p.csv", SHOPIFY_HEADER, rows)
    catalog = read_shopify(path)
    fetcher = ImageFetcher(tmp_path / "store" / "image-cache", timeout_s=2, progress=False)
    store = open_store(url=":memory:")
    report = run_ingest(
        ImageURLCatalog(catalog, fetcher),
        store,
        FakeEncoder(),
        progress=False,
        indexed_fields=catalog.indexed_fields(),
    )
    assert report.stored == 2 and report.skipped == {BAD_ROW: 1}
    assert report.issues[0].reason == f"image {base}gone.jpg: 404 Not Found"
    assert report.issues[0].line == 8
    # Only the chosen image of each product is fetched.
    assert server.hits["/img/tee-1.jpg"] == 1 and server.hits["/img/tee-2.jpg"] == 0
    assert catalog.indexed_fields()["tags"] == "keyword"
    assert catalog.indexed_fields()["price_min"] == "float"
    # Tags filter as any-of; prices as ranges.
    flt = Filter((Match("tags", ("winter", "Men")),))
    assert store.count(flt) == 1
    assert store.count(Filter((Range("price_max", lte=6.0),))) == 1
    # A second run downloads nothing and stores nothing new.
    again = run_ingest(
        ImageURLCatalog(read_shopify(path), fetcher), store, FakeEncoder(), progress=False
    )
    assert again.unchanged == 2 and again.stored == 0
    assert server.hits["/img/tee-1.jpg"] == 1 and server.hits["/img/gone.jpg"] == 2
    store.close()


# --------------------------------------------------------------------------- from the catalog

CATALOG_PRODUCTS = 300
SIZES = (("S", 0.0), ("M", 2.0), ("L", 4.5))


def catalog_rows(n: int) -> list[dict[str, Any]]:
    """The first ``n`` catalog products that have a name and an image (with their JPEG bytes)."""
    import pyarrow.parquet as pq

    files = sorted(Settings().catalog.rglob("*.parquet"))
    table = pq.ParquetFile(files[0]).read_row_group(0).slice(0, n * 2).to_pylist()
    rows = [r for r in table if r["productDisplayName"] and r["image"] and r["image"]["bytes"]]
    return rows[:n]


@pytest.fixture(scope="module")
def catalog_sample() -> list[dict[str, Any]]:
    rows = catalog_rows(CATALOG_PRODUCTS)
    assert len(rows) == CATALOG_PRODUCTS
    return rows


def serve_catalog_images(server: ScriptedServer, rows: list[dict[str, Any]]) -> None:
    """Image k of product i is product (i + k)'s JPEG: position 1 is the product's own."""
    for i, row in enumerate(rows):
        for k in (1, 2, 3):
            other = rows[(i + k - 1) % len(rows)]
            server.route(f"/img/{row['id']}-{k}.jpg", Reply(body=other["image"]["bytes"]))


def base_price(row: dict[str, Any]) -> float:
    return 10.0 + row["id"] % 50


def shopify_catalog_export(path: Path, server: ScriptedServer, rows: list[dict[str, Any]]) -> Path:
    """A Shopify product export of ``rows`` (three size variants each, images at positions
    1..3 listed out of order, served by ``server``)."""
    serve_catalog_images(server, rows)
    export: list[dict[str, Any]] = []
    for row in rows:
        url = server.url(f"/img/{row['id']}-")
        tags = ", ".join(
            t for t in (row["gender"], row["usage"], row["season"], row["baseColour"]) if t
        )
        for s, (size, extra) in enumerate(SIZES):
            line: dict[str, Any] = {
                "Handle": f"p{row['id']}",
                "Option1 Value": size,
                "Variant SKU": f"{row['id']}-{size}",
                "Variant Price": f"{base_price(row) + extra:.2f}",
                # Images listed 2, 1, 3: the reader picks position 1.
                "Image Src": f"{url}{(2, 1, 3)[s]}.jpg",
                "Image Position": str((2, 1, 3)[s]),
            }
            if s == 0:
                line.update(
                    {
                        "Title": row["productDisplayName"],
                        "Body (HTML)": f"<p>{row['productDisplayName']} &amp; more</p>",
                        "Vendor": row["productDisplayName"].split()[0],
                        "Product Category": f"{row['masterCategory']} > {row['subCategory']}",
                        "Type": row["articleType"],
                        "Tags": tags,
                        "Published": "TRUE",
                        "Option1 Name": "Size",
                        "Status": "active",
                    }
                )
            export.append(line)
    return write_export(path, SHOPIFY_HEADER, export)


@pytest.mark.catalog
def test_shopify_export_of_the_catalog(
    tmp_path: Path, server: ScriptedServer, catalog_sample: list[dict[str, Any]]
):
    path = shopify_catalog_export(tmp_path / "products_export.csv", server, catalog_sample)
    assert detect_platform(SHOPIFY_HEADER) == "shopify"
    catalog = read_shopify(path)
    assert catalog.issues == [] and catalog.total == CATALOG_PRODUCTS
    products = by_id(catalog)
    for row in catalog_sample:
        product = products[f"p{row['id']}"]
        assert product.metadata["name"] == " ".join(row["productDisplayName"].split())
        assert product.metadata["price_min"] == base_price(row)
        assert product.metadata["price_max"] == base_price(row) + 4.5
        assert product.metadata["option_size"] == ["S", "M", "L"]
        assert product.metadata["product_type"] == row["articleType"]
        assert row["gender"] in product.metadata["tags"]
        assert product.image_url == server.url(f"/img/{row['id']}-1.jpg")
        assert len(product.metadata["image_urls"]) == 3

    fetcher = ImageFetcher(tmp_path / "image-cache", workers=8, timeout_s=5, progress=False)
    resolved = list(ImageURLCatalog(catalog, fetcher, chunk_size=64))
    assert server.total_hits == CATALOG_PRODUCTS
    for product, row in zip(resolved, catalog_sample, strict=True):
        assert product.error is None and product.image_path is not None
        assert product.image_path.read_bytes() == row["image"]["bytes"]
    # A resumed run requests nothing.
    list(ImageURLCatalog(read_shopify(path), fetcher))
    assert server.total_hits == CATALOG_PRODUCTS

    store = open_store(url=":memory:")
    report = run_ingest(
        ImageURLCatalog(read_shopify(path), fetcher),
        store,
        FakeEncoder(),
        progress=False,
        indexed_fields=catalog.indexed_fields(),
        hubness=False,
        build_index=False,
    )
    assert report.stored == CATALOG_PRODUCTS and report.skipped == {}
    men = sum(1 for r in catalog_sample if r["gender"] == "Men")
    assert store.count(Filter((Match("tags", ("Men",)),))) == men
    store.close()


def woocommerce_catalog_export(
    path: Path, server: ScriptedServer, rows: list[dict[str, Any]]
) -> Path:
    """A WooCommerce export of ``rows`` (a variable product with three variations each,
    three image URLs served by ``server``)."""
    serve_catalog_images(server, rows)
    export: list[dict[str, Any]] = []
    for row in rows:
        urls = [server.url(f"/img/{row['id']}-{k}.jpg") for k in (1, 2, 3)]
        export.append(
            {
                "ID": row["id"],
                "Type": "variable",
                "SKU": f"S{row['id']}",
                "Name": row["productDisplayName"],
                "Published": "1",
                "Description": f"<div>{row['usage']} wear</div>",
                "Categories": f"{row['masterCategory']} > {row['subCategory']} > "
                f"{row['articleType']}, {row['gender']}",
                "Tags": row["baseColour"],
                "Images": ", ".join(urls),
                "Attribute 1 name": "Size",
                "Attribute 1 value(s)": "S, M, L",
            }
        )
        for size, extra in SIZES:
            export.append(
                {
                    "ID": f"{row['id']}{size}",
                    "Type": "variation",
                    "SKU": f"S{row['id']}-{size}",
                    "Name": f"{row['productDisplayName']} - {size}",
                    "Regular price": f"{base_price(row) + extra:.2f}",
                    # Half the variations name their parent by id, half by SKU.
                    "Parent": f"id:{row['id']}" if row["id"] % 2 else f"S{row['id']}",
                    "Attribute 1 name": "Size",
                    "Attribute 1 value(s)": size,
                }
            )
    return write_export(path, WOO_HEADER, export)


@pytest.mark.catalog
def test_woocommerce_export_of_the_catalog(
    tmp_path: Path, server: ScriptedServer, catalog_sample: list[dict[str, Any]]
):
    path = woocommerce_catalog_export(tmp_path / "wc-product-export.csv", server, catalog_sample)
    catalog = read_woocommerce(path)
    assert catalog.issues == [] and catalog.total == CATALOG_PRODUCTS
    products = by_id(catalog)
    for row in catalog_sample:
        product = products[str(row["id"])]
        assert product.metadata["price_min"] == base_price(row)
        assert product.metadata["price_max"] == base_price(row) + 4.5
        assert product.metadata["categories"] == [
            f"{row['masterCategory']} > {row['subCategory']} > {row['articleType']}",
            row["gender"],
        ]
        assert product.metadata["category_leaves"] == [row["articleType"], row["gender"]]
        assert len(product.metadata["skus"]) == 4
        assert product.image_url == server.url(f"/img/{row['id']}-1.jpg")

    fetcher = ImageFetcher(tmp_path / "image-cache", workers=8, timeout_s=5, progress=False)
    resolved = list(ImageURLCatalog(catalog, fetcher))
    assert server.total_hits == CATALOG_PRODUCTS
    for product, row in zip(resolved, catalog_sample, strict=True):
        assert product.load_image().size == Image.open(io.BytesIO(row["image"]["bytes"])).size


# --------------------------------------------------------------------------- clipy ingest, no flags


def _cli(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from ingest.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _facet_counts(store: Path, field: str, *filters: str) -> dict[Any, int]:
    args = ["facets", field, "--store", str(store), "--limit", "1000", "--json"]
    for flt in filters:
        args += ["-f", flt]
    code, out, err = _cli(*args)
    assert code == 0, err
    return {c["value"]: c["count"] for c in json.loads(out)[field]}


def _count(store: Path, *filters: str) -> int:
    from clipy_qdrant.search import Searcher

    opened = open_store(store)
    try:
        return Searcher(opened, hubness=0).count(list(filters))
    finally:
        opened.close()


def _broken_rows(server: ScriptedServer) -> list[dict[str, Any]]:
    """One more product whose only image URL answers 404."""
    return [
        {
            "Handle": "broken-link",
            "Title": "Product with a broken image link",
            "Vendor": "Nobody",
            "Type": "Socks",
            "Variant Price": "5.00",
            "Image Src": server.url("/img/missing.jpg"),
            "Image Position": "1",
        }
    ]


@pytest.mark.catalog
def test_clipy_ingest_takes_a_shopify_export_with_no_flags(
    tmp_path: Path, server: ScriptedServer, catalog_sample: list[dict[str, Any]]
):
    """Issue #22, acceptance 2: 300 catalog products as a Shopify export with image URLs on a
    loopback server; `clipy ingest FILE` with no flags stores 300 products, vendor / type / tag
    / price filters work, a broken URL is reported with its row, and a repeat run downloads and
    stores nothing."""
    from fake_encoder import register_fake

    register_fake()
    path = shopify_catalog_export(tmp_path / "products_export.csv", server, catalog_sample)
    with path.open("a", newline="", encoding="utf-8") as fh:
        csv.DictWriter(fh, fieldnames=SHOPIFY_HEADER).writerows(_broken_rows(server))
    server.route("/img/missing.jpg", Reply(status=404))
    store = tmp_path / "store"
    report = tmp_path / "report.json"
    code, _, err = _cli("ingest", str(path), "--store", str(store), "--encoder", "fake",
                        "--report", str(report))  # fmt: skip
    assert code == 0, err
    issues = json.loads(report.read_text())["issues"]
    broken = [i for i in issues if i.get("product_id") == "broken-link"]
    assert len(broken) == 1 and "404" in broken[0]["reason"], issues
    assert broken[0]["line"] is not None or broken[0]["row"] is not None, broken[0]
    code, out, err = _cli("info", "--store", str(store), "--json")
    assert code == 0 and json.loads(out)["products"] == CATALOG_PRODUCTS, err

    vendors = {r["productDisplayName"].split()[0] for r in catalog_sample}
    vendor = sorted(vendors)[0]
    expected = sum(1 for r in catalog_sample if r["productDisplayName"].split()[0] == vendor)
    assert sum(_facet_counts(store, "vendor", f"vendor={vendor}").values()) == expected
    kind = catalog_sample[0]["articleType"]
    assert _facet_counts(store, "product_type", f"product_type={kind}") == {
        kind: sum(1 for r in catalog_sample if r["articleType"] == kind)
    }
    men = sum(1 for r in catalog_sample if r["gender"] == "Men")
    women = sum(1 for r in catalog_sample if r["gender"] == "Women")
    tag_counts = _facet_counts(store, "tags", "tags=Men,Women")
    assert tag_counts["Men"] == men and tag_counts["Women"] == women
    cheap = sum(1 for r in catalog_sample if base_price(r) < 20)
    assert _count(store, "price_min<20") == cheap
    assert _count(store, "price_max>=20", "price_min<20") == sum(
        1 for r in catalog_sample if base_price(r) < 20 <= base_price(r) + 4.5
    )
    code, out, err = _cli("search", "shirt", "--store", str(store), "-f", f"vendor={vendor}",
                          "-k", "5", "--json")  # fmt: skip
    assert code == 0 and all(h["payload"]["vendor"] == vendor for h in json.loads(out)), err

    hits_before = server.total_hits
    code, _, err = _cli("ingest", str(path), "--store", str(store), "--encoder", "fake",
                        "--report", str(report))  # fmt: skip
    assert code == 0, err
    # Only the broken URL (failures are not cached) is asked again; nothing new is stored.
    assert server.total_hits == hits_before + 1
    assert json.loads(report.read_text())["stored"] == 0


@pytest.mark.catalog
def test_clipy_ingest_takes_a_woocommerce_export_with_no_flags(
    tmp_path: Path, server: ScriptedServer, catalog_sample: list[dict[str, Any]]
):
    """Issue #22, acceptance 3: the same for a WooCommerce export."""
    from fake_encoder import register_fake

    register_fake()
    path = woocommerce_catalog_export(tmp_path / "wc-product-export.csv", server, catalog_sample)
    store = tmp_path / "store"
    report = tmp_path / "report.json"
    code, _, err = _cli("ingest", str(path), "--store", str(store), "--encoder", "fake",
                        "--report", str(report))  # fmt: skip
    assert code == 0, err
    code, out, err = _cli("info", "--store", str(store), "--json")
    assert code == 0 and json.loads(out)["products"] == CATALOG_PRODUCTS, err
    kind = catalog_sample[0]["articleType"]
    leaves = _facet_counts(store, "category_leaves", f"category_leaves={kind}")
    assert leaves[kind] == sum(1 for r in catalog_sample if r["articleType"] == kind)
    cheap = sum(1 for r in catalog_sample if base_price(r) < 20)
    assert _count(store, "price_min<20") == cheap
    hits_before = server.total_hits
    code, _, err = _cli("ingest", str(path), "--store", str(store), "--encoder", "fake",
                        "--report", str(report))  # fmt: skip
    assert code == 0, err
    assert server.total_hits == hits_before
    assert json.loads(report.read_text())["stored"] == 0
