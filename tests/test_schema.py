"""Schema detection (issue #22): a plain product CSV ingests with no flags, results show its
titles, its fields filter; ``--dry-run`` explains the choices and writes nothing; the fashion
catalog's detected text is the shipped default template."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fake_encoder import register_fake
from PIL import Image
from typer.testing import CliRunner

from clipy_qdrant.config import Settings
from clipy_qdrant.errors import ConfigError
from ingest.cli import app
from ingest.readers import DEFAULT_TEXT_TEMPLATE, open_catalog
from ingest.schema import NAME_FIELD_KEY, describe_catalog, detect_schema

CATEGORIES = {"Shirts": (220, 20, 20), "Shoes": (20, 40, 220), "Bags": (20, 160, 40)}


@pytest.fixture(scope="module", autouse=True)
def _fake() -> None:
    register_fake()


@pytest.fixture(scope="module")
def products_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 products, ``sku,title,category,price,image``; images are real JPEG / PNG files at
    paths relative to the CSV's folder."""
    root = tmp_path_factory.mktemp("shop")
    (root / "pictures").mkdir()
    rows = []
    for i in range(30):
        category = list(CATEGORIES)[i % 3]
        fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
        name = f"pictures/item-{i:02d}.{ext}"
        Image.new("RGB", (32, 40), CATEGORIES[category]).save(root / name, fmt)
        rows.append(
            {
                "sku": f"SKU-{i:03d}",
                "title": f"Classic {category[:-1].lower()} model {i}",
                "category": category,
                "price": f"{10 + i * 1.5:.2f}",
                "image": name,
            }
        )
    path = root / "products.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_columns_of_a_plain_product_csv_are_detected(products_csv: Path) -> None:
    catalog = open_catalog(products_csv)
    schema = catalog.schema
    assert schema is not None
    assert (schema.id.column, schema.name.column, schema.image.column, schema.image_kind) == (
        "sku", "title", "image", "path",
    )  # fmt: skip
    assert schema.text_template == "{title}, {category}"
    assert catalog.display_field == "title"
    products = list(catalog)
    assert products[0].product_id == "SKU-000"
    assert products[0].text == "Classic shirt model 0, Shirts"
    assert products[1].image_path == products_csv.parent / "pictures" / "item-01.png"
    assert products[1].load_image().size == (32, 40)
    assert products[3].metadata == {"title": "Classic shirt model 3", "category": "Shirts",
                                    "price": 14.5}  # fmt: skip
    description = describe_catalog(catalog)
    assert description.indexed_fields == {"category": "keyword", "price": "float"}
    data = description.to_dict()
    assert data["id"]["column"] == "sku" and data["image"]["kind"] == "path"
    assert data["fields"]["price"] == {"type": "float", "index": "float"}
    assert data["examples"][0] == {"id": "SKU-000", "text": "Classic shirt model 0, Shirts"}


def test_a_plain_product_csv_ingests_with_no_flags_and_searches_by_title(
    products_csv: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    code, out, err = run(
        "ingest", str(products_csv), "--store", str(store), "--encoder", "fake",
        "--report", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert code == 0, err
    assert out == "" and "stored 30 products" in err
    code, out, err = run("search", "classic shoe", "--store", str(store), "-k", "5")
    assert code == 0, err
    rows = out.splitlines()[1:]
    assert len(rows) == 5 and all("Classic" in row and "model" in row for row in rows)
    code, out, _ = run(
        "search", "classic", "--store", str(store), "-k", "30", "-f", "category=Shoes", "--json"
    )
    hits = json.loads(out)
    assert len(hits) == 10 and {h["payload"]["category"] for h in hits} == {"Shoes"}
    assert all(h["payload"][NAME_FIELD_KEY] == "title" for h in hits)
    code, out, _ = run("search", "classic", "--store", str(store), "-k", "30", "-f", "price<25",
                       "--json")  # fmt: skip
    prices = sorted(h["payload"]["price"] for h in json.loads(out))
    assert prices == [10 + i * 1.5 for i in range(10)]  # 10.0 … 23.5


def test_dry_run_prints_the_choices_and_writes_no_store(
    products_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty working directory: the report a real ingest writes would appear here.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    store = tmp_path / "store"
    code, out, err = run("ingest", str(products_csv), "--dry-run", "--store", str(store))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].startswith("id:      sku  - named like an id")
    assert lines[2].startswith("name:    title  - named like a product name")
    assert lines[3].startswith("image:   image (path)")
    assert lines[4].startswith("text:    {title}, {category}  - ")
    assert any(line.split() == ["price", "float", "filterable", "(float)"] for line in lines)
    assert "  SKU-000: Classic shirt model 0, Shirts" in lines
    assert not store.exists() and not (Path.cwd() / "clipy-ingest-report.json").exists()
    # Flags still override every choice.
    code, out, _ = run(
        "ingest", str(products_csv), "--dry-run", "--id-column", "title", "--text", "{sku}"
    )
    assert code == 0
    assert "id:      title  - given (--id-column)" in out
    assert "  Classic shirt model 0: SKU-000" in out


def test_detection_rules_on_small_samples() -> None:
    # No id column: the row number is the id; URLs are marked as such.
    rows = [
        {"Name": "Red top", "colour": "Red", "photo_url": "https://example.com/a.jpg"},
        {"Name": "Blue top", "colour": "Blue", "photo_url": "https://example.com/b.jpg"},
    ]
    schema = detect_schema(["Name", "colour", "photo_url"], rows)
    assert schema.id.column is None and "row number" in schema.id.reason
    assert (schema.image.column, schema.image_kind) == ("photo_url", "url")
    assert schema.text_template == "{Name}, {colour}"
    # An image column found by its values; the role order (who, occasion, season, type,
    # colour) beats column order; an attribute that a finer one determines is left out.
    types = ["Tshirts", "Jeans", "Shoes", "Sandals"]
    rows = [
        {
            "product_id": i,
            "label": f"Item {i}",
            "color": ["Red", "Blue", "Black"][(i // 4) % 3],
            "group": "Footwear" if types[i % 4] in ("Shoes", "Sandals") else "Apparel",
            "articleType": types[i % 4],
            "gender": ["Men", "Women", "Unisex"][i % 3],
            "pic": f"imgs/{i}.png",
        }
        for i in range(40)
    ]
    schema = detect_schema(list(rows[0]), rows)
    assert (schema.id.column, schema.name.column, schema.image.column) == (
        "product_id", "label", "pic",
    )  # fmt: skip
    assert schema.text_template == "{label}, {gender} {articleType} {color}"
    assert "group (by articleType)" in schema.text_reason
    with pytest.raises(ConfigError, match="--text"):
        detect_schema(["id", "price"], [{"id": 1, "price": 2.5}])


def test_url_images_are_marked_for_fetching(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_text(
        '{"handle": "a", "title": "Red top", "image_url": "https://shop.example/a.jpg"}\n',
        encoding="utf-8",
    )
    (product,) = open_catalog(path)
    assert product.product_id == "a" and product.image_url == "https://shop.example/a.jpg"
    assert product.image_path is None


@pytest.mark.catalog
def test_fashion_catalog_detection_gives_the_shipped_text_template() -> None:
    catalog = open_catalog(Settings().catalog)
    schema = catalog.schema
    assert schema is not None
    assert schema.text_template == DEFAULT_TEXT_TEMPLATE
    assert (schema.id.column, schema.name.column, schema.image.column, schema.image_kind) == (
        "id", "productDisplayName", "image", "bytes",
    )  # fmt: skip
    assert catalog.display_field == "productDisplayName"
    first = next(iter(catalog))
    assert first.text.startswith(first.metadata["productDisplayName"] + ", ")


def test_dry_run_of_an_image_folder(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "red_summer-dress.png")
    code, out, err = run("ingest", str(tmp_path), "--dry-run")
    assert code == 0, err
    assert "image:   file (path)" in out
    assert "  red_summer-dress.png: red summer dress" in out


@pytest.mark.catalog
def test_fashion_catalog_products_are_the_same_detected_or_named() -> None:
    """Detection gives the products (so the content hashes) that naming every column gave."""
    detected = list(open_catalog(Settings().catalog, limit=300))
    named = list(
        open_catalog(
            Settings().catalog,
            limit=300,
            id_column="id",
            image_column="image",
            text_template=DEFAULT_TEXT_TEMPLATE,
        )
    )
    assert [(p.product_id, p.text, p.metadata, p.image_bytes) for p in detected] == [
        (p.product_id, p.text, p.metadata, p.image_bytes) for p in named
    ]


def test_dry_run_names_the_values_that_do_not_fit(tmp_path: Path) -> None:
    rows = "".join(f"S{i},Item {i},{10 + i}\n" for i in range(9))
    (tmp_path / "images").mkdir()
    (tmp_path / "p.csv").write_text(f"sku,title,price\n{rows}S9,Odd,12a\n", encoding="utf-8")
    description = describe_catalog(open_catalog(tmp_path / "p.csv"))
    assert description.bad_values == [f"{tmp_path / 'p.csv'} line 11 field price: "
                                      "'12a' is not an integer"]  # fmt: skip
    assert description.to_dict()["fields"]["price"] == {"type": "integer", "index": "integer"}
