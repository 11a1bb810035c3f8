"""Catalog readers on small real files: HF-layout parquet, CSV/JSONL + image folder, image folder,
a local dataset through ``datasets``, text templates, column mapping, limits, errors."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clipy_qdrant.config import Settings
from clipy_qdrant.errors import ConfigError, InputError
from ingest.readers import (
    DEFAULT_TEXT_TEMPLATE,
    NAME_TEXT_TEMPLATE,
    CsvCatalog,
    HubCatalog,
    ImageFolderCatalog,
    JsonlCatalog,
    ParquetCatalog,
    clean_value,
    id_string,
    open_catalog,
    parse_columns,
    render_template,
)

ROWS: list[dict[str, Any]] = [
    {
        "id": 101,
        "gender": "Men",
        "articleType": "Tshirts",
        "baseColour": "Red",
        "year": 2011,
        "usage": "Casual",
        "productDisplayName": "Kipsta Men Jersey Red",
        "rgb": (220, 20, 20),
    },
    {
        "id": 102,
        "gender": "Women",
        "articleType": "Kurtas",
        "baseColour": "Blue",
        "year": 2012,
        "usage": "",  # an empty string, as in the catalog
        "productDisplayName": "Fabindia Women Kurta Blue",
        "rgb": (20, 40, 220),
    },
    {
        "id": 103,
        "gender": "Men",
        "articleType": "Watches",
        "baseColour": None,
        "year": None,
        "usage": "Formal",
        "productDisplayName": "Titan Men Watch",
        "rgb": (30, 30, 30),
    },
]
META_COLUMNS = ["gender", "articleType", "baseColour", "year", "usage", "productDisplayName"]


def image_bytes(
    rgb: tuple[int, int, int], fmt: str = "JPEG", size: tuple[int, int] = (60, 80)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path: Path, rgb: tuple[int, int, int], fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix]
    path.write_bytes(image_bytes(rgb, fmt))
    return path


def write_hf_parquet(
    root: Path, rows: list[dict[str, Any]], name: str = "train-00000-of-00001"
) -> Path:
    """``root/data/<name>.parquet`` as the hub writes it: image = struct {bytes, path}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data: dict[str, list[Any]] = {"id": [r["id"] for r in rows]}
    for column in META_COLUMNS:
        data[column] = [r.get(column) for r in rows]
    data["image"] = [
        {"bytes": r["image"] if "image" in r else image_bytes(r["rgb"]), "path": f"{r['id']}.jpg"}
        for r in rows
    ]
    schema = pa.schema(
        [
            ("id", pa.int64()),
            *((c, pa.int64() if c == "year" else pa.large_string()) for c in META_COLUMNS),
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ]
    )
    features = {
        c: {"dtype": "int64" if c in ("id", "year") else "string", "_type": "Value"}
        for c in ["id", *META_COLUMNS]
    }
    features["image"] = {"_type": "Image"}
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path = root / "data" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data, schema=schema), path)
    return path


def write_styles_csv(root: Path, rows: list[dict[str, Any]], *, images: bool = True) -> Path:
    lines = ["id,gender,articleType,baseColour,year,usage,productDisplayName"]
    for r in rows:
        cells = [str(r["id"]), *("" if r.get(c) is None else str(r[c]) for c in META_COLUMNS)]
        lines.append(",".join(cells))
        if images:
            write_image(root / "images" / f"{r['id']}.jpg", r["rgb"])
    path = root / "styles.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_catalog_products(products: list[Any]) -> None:
    """The three ROWS, whichever reader produced them."""
    assert [p.product_id for p in products] == ["101", "102", "103"]
    first, second, third = products
    assert first.metadata == {
        "gender": "Men",
        "articleType": "Tshirts",
        "baseColour": "Red",
        "year": 2011,
        "usage": "Casual",
        "productDisplayName": "Kipsta Men Jersey Red",
    }
    assert isinstance(first.metadata["year"], int)
    assert "usage" not in second.metadata  # empty string left out
    assert "baseColour" not in third.metadata and "year" not in third.metadata  # nulls left out
    # The default text: the name, then the attributes (empty or null ones left out).
    assert [p.text for p in products] == [
        "Kipsta Men Jersey Red, Men Casual Tshirts Red",
        "Fabindia Women Kurta Blue, Women Kurtas Blue",
        "Titan Men Watch, Men Formal Watches",
    ]
    for product, row in zip(products, ROWS, strict=True):
        image = product.load_image()
        assert image.mode == "RGB" and image.size == (60, 80)
        r, g, b = image.getpixel((30, 40))
        assert max(abs(r - row["rgb"][0]), abs(g - row["rgb"][1]), abs(b - row["rgb"][2])) < 12
    assert [p.row for p in products] == [0, 1, 2]


# --------------------------------------------------------------------------- parquet


def test_parquet_folder_in_hf_layout(tmp_path: Path) -> None:
    write_hf_parquet(tmp_path / "ds", ROWS)
    catalog = open_catalog(tmp_path / "ds")
    assert isinstance(catalog, ParquetCatalog)
    assert len(catalog) == 3 and catalog.total == 3
    products = list(catalog)
    assert_catalog_products(products)
    # Images stay JPEG bytes in the record; decoding is the pipeline's job.
    assert products[0].image_bytes is not None and products[0].image_bytes[:2] == b"\xff\xd8"
    assert products[0].where().endswith("train-00000-of-00001.parquet row 0")


def test_parquet_single_file_and_several_shards(tmp_path: Path) -> None:
    file = write_hf_parquet(tmp_path / "ds", ROWS[:2], name="train-00000-of-00002")
    write_hf_parquet(tmp_path / "ds", ROWS[2:], name="train-00001-of-00002")
    assert [p.product_id for p in open_catalog(file)] == ["101", "102"]
    catalog = open_catalog(str(tmp_path / "ds"))
    assert len(catalog) == 3
    assert_catalog_products_any_rows = [p.product_id for p in catalog]
    assert assert_catalog_products_any_rows == ["101", "102", "103"]


def test_parquet_limit(tmp_path: Path) -> None:
    write_hf_parquet(tmp_path / "ds", ROWS)
    catalog = open_catalog(tmp_path / "ds", limit=2)
    assert len(catalog) == 2
    assert [p.product_id for p in catalog] == ["101", "102"]
    assert list(open_catalog(tmp_path / "ds", limit=0)) == []


def test_parquet_through_datasets_gives_the_same_products(tmp_path: Path) -> None:
    """The hub reader (``datasets``) on the same files yields the same records as pyarrow."""
    write_hf_parquet(tmp_path / "ds", ROWS)
    via_arrow = list(open_catalog(tmp_path / "ds"))
    via_datasets = list(
        HubCatalog(
            str(tmp_path / "ds"),
            images=None,
            limit=None,
            id_column="id",
            columns=None,
            image_column="image",
            image_pattern="{id}.jpg",
            text_template=None,
            name_column=None,
        )
    )
    assert_catalog_products(via_datasets)
    for a, b in zip(via_arrow, via_datasets, strict=True):
        assert (a.product_id, a.text, a.metadata, a.image_bytes) == (
            b.product_id,
            b.text,
            b.metadata,
            b.image_bytes,
        )


def test_unreachable_hub_id_is_a_clear_error() -> None:
    with pytest.raises(InputError, match=r"cannot load 'nobody/no-such-dataset'.*hub"):
        open_catalog("nobody/no-such-dataset")


def test_missing_file_is_an_error_not_a_hub_lookup(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        open_catalog(tmp_path / "styles.csv")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="unknown catalog file type"):
        open_catalog(tmp_path / "notes.txt")


# --------------------------------------------------------------------------- CSV / JSONL


def test_csv_with_image_folder_kaggle_layout(tmp_path: Path) -> None:
    styles = write_styles_csv(tmp_path, ROWS)
    catalog = open_catalog(styles)  # images/ beside the file by default
    assert isinstance(catalog, CsvCatalog) and len(catalog) == 3
    products = list(catalog)
    assert_catalog_products(products)
    assert products[0].image_path == tmp_path / "images" / "101.jpg"
    assert products[0].line == 2 and products[0].where() == f"{styles} line 2"


def test_csv_unquoted_comma_in_last_column_and_typed_columns(tmp_path: Path) -> None:
    (tmp_path / "styles.csv").write_text(
        "id,price,year,productDisplayName\n1,9.5,2011,Puma Men, Black Shoes\n2,12,,Plain name\n",
        encoding="utf-8",
    )
    products = list(open_catalog(tmp_path / "styles.csv", images=tmp_path))
    assert products[0].text == "Puma Men, Black Shoes"
    assert products[0].metadata == {
        "price": 9.5,
        "year": 2011,
        "productDisplayName": "Puma Men, Black Shoes",
    }
    assert products[1].metadata["price"] == 12.0 and isinstance(
        products[1].metadata["price"], float
    )
    assert "year" not in products[1].metadata


def test_csv_explicit_images_and_pattern(tmp_path: Path) -> None:
    styles = write_styles_csv(tmp_path, ROWS, images=False)
    for row in ROWS:
        write_image(tmp_path / "pics" / f"p-{row['id']}.png", row["rgb"])
    catalog = open_catalog(styles, images=tmp_path / "pics", image_pattern="p-{id}.png")
    products = list(catalog)
    assert [p.image_path for p in products] == [
        tmp_path / "pics" / f"p-{r['id']}.png" for r in ROWS
    ]
    assert_catalog_products(products)


def test_csv_without_image_folder_is_refused(tmp_path: Path) -> None:
    styles = write_styles_csv(tmp_path, ROWS, images=False)
    with pytest.raises(ConfigError, match="--images"):
        open_catalog(styles)
    with pytest.raises(InputError, match="does not exist"):
        open_catalog(styles, images=tmp_path / "nowhere")


def test_jsonl_keeps_json_types_and_reports_bad_lines(tmp_path: Path) -> None:
    lines = []
    for r in ROWS:
        record = {k: r[k] for k in ("id", *META_COLUMNS)}
        record["image"] = f"{r['id']}.jpg"  # relative to --images
        record["tags"] = ["a", "b"]
        lines.append(json.dumps(record))
        write_image(tmp_path / "imgs" / f"{r['id']}.jpg", r["rgb"])
    lines.insert(1, "{not json")
    lines.insert(2, "")
    lines.insert(3, "[1, 2]")
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    catalog = open_catalog(tmp_path / "items.jsonl", images=tmp_path / "imgs")
    assert isinstance(catalog, JsonlCatalog) and len(catalog) == 5
    products = list(catalog)
    bad = [p for p in products if p.error]
    assert [(p.line, p.error.split(":")[0]) for p in bad if p.error] == [
        (2, "invalid JSON"),
        (4, "expected a JSON object, got list"),
    ]
    good = [p for p in products if not p.error]
    assert good[0].metadata["tags"] == ["a", "b"]
    for p in good:
        del p.metadata["tags"]
        p.row = [r["id"] for r in ROWS].index(int(p.product_id))
    assert_catalog_products(good)
    assert good[1].line == 5


# --------------------------------------------------------------------------- image folder


def test_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    write_image(root / "red_summer-dress.jpg", (220, 20, 20))
    write_image(root / "shoes" / "blue sneaker.png", (20, 40, 220))
    write_image(root / "shoes" / "green.webp", (20, 160, 40))
    write_image(root / "UPPER.JPG", (200, 200, 0), fmt="JPEG")
    (root / "readme.txt").write_text("not an image")
    catalog = open_catalog(root)
    assert isinstance(catalog, ImageFolderCatalog) and len(catalog) == 4
    products = {p.product_id: p for p in catalog}
    assert set(products) == {
        "UPPER.JPG",
        "red_summer-dress.jpg",
        "shoes/blue sneaker.png",
        "shoes/green.webp",
    }
    dress = products["red_summer-dress.jpg"]
    assert dress.text == "red summer dress"
    assert dress.metadata == {"file": "red_summer-dress.jpg", "name": "red summer dress"}
    sneaker = products["shoes/blue sneaker.png"]
    assert sneaker.metadata["folder"] == "shoes"
    for product in products.values():
        assert product.load_image().size == (60, 80)
    assert [p.text for p in open_catalog(root, text_template="{folder} {name}", limit=2)] == [
        "UPPER",
        "red summer dress",
    ]


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no parquet, jpg"):
        open_catalog(tmp_path / "empty")


# --------------------------------------------------------------------------- text and columns


def test_text_template_over_several_columns(tmp_path: Path) -> None:
    styles = write_styles_csv(tmp_path, ROWS)
    template = "{productDisplayName} {articleType} {baseColour}"
    texts = [p.text for p in open_catalog(styles, text_template=template)]
    assert texts == [
        "Kipsta Men Jersey Red Tshirts Red",
        "Fabindia Women Kurta Blue Kurtas Blue",
        "Titan Men Watch Watches",  # missing colour: no double space, no "None"
    ]
    with pytest.raises(ConfigError, match="'colour' is not a column"):
        open_catalog(styles, text_template="{productDisplayName} {colour}")
    # Separators that empty values leave dangling are dropped; others are kept.
    names = [p.text for p in open_catalog(styles, text_template="{baseColour}, {usage} | {id}")]
    assert names == ["Red, Casual | 101", "Blue | 102", "Formal | 103"]


def test_default_text_is_name_plus_attributes_the_source_has(tmp_path: Path) -> None:
    (tmp_path / "styles.csv").write_text(
        "id,season,articleType,productDisplayName\n1,Summer,Tops,Zara Red Top\n2,,,Plain\n",
        encoding="utf-8",
    )
    catalog = open_catalog(tmp_path / "styles.csv", images=tmp_path)
    # No gender / usage / baseColour columns: the detected text names the ones it has.
    assert catalog.schema is not None
    assert catalog.schema.text_template == "{productDisplayName}, {season} {articleType}"
    assert [p.text for p in catalog] == ["Zara Red Top, Summer Tops", "Plain"]
    assert DEFAULT_TEXT_TEMPLATE.startswith(NAME_TEXT_TEMPLATE + ", ")
    # Without a name column the attributes alone make the text; with nothing at all to
    # describe the products, the text must be given.
    (tmp_path / "noname.csv").write_text("id,gender\n1,Men\n", encoding="utf-8")
    assert [p.text for p in open_catalog(tmp_path / "noname.csv", images=tmp_path)] == ["Men"]
    (tmp_path / "nothing.csv").write_text("id,year\n1,2012\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="give the text with --text"):
        open_catalog(tmp_path / "nothing.csv", images=tmp_path)
    with pytest.raises(ConfigError, match="'usage' is not a column"):
        open_catalog(
            tmp_path / "styles.csv", images=tmp_path, text_template="{productDisplayName} {usage}"
        )


def test_column_mapping_renames_and_include_list_selects(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text(
        "sku,title,colour,year\nA1,Red Shirt,Red,2020\nA2,Blue Jeans,Blue,2019\n", encoding="utf-8"
    )
    write_image(tmp_path / "images" / "A1.jpg", (220, 20, 20))
    write_image(tmp_path / "images" / "A2.jpg", (20, 40, 220))
    renamed = list(
        open_catalog(
            tmp_path / "items.csv",
            id_column="sku",
            columns={"title": "productDisplayName", "colour": "baseColour"},
        )
    )
    assert [p.product_id for p in renamed] == ["A1", "A2"]
    assert renamed[0].text == "Red Shirt, Red"  # the default template works after renaming
    assert renamed[0].metadata == {
        "productDisplayName": "Red Shirt",
        "baseColour": "Red",
        "year": 2020,
    }
    selected = list(
        open_catalog(
            tmp_path / "items.csv", id_column="sku", columns=["colour"], text_template="{title}"
        )
    )
    assert selected[1].metadata == {"colour": "Blue"}
    assert selected[1].text == "Blue Jeans"  # the template may use columns left out of the payload
    with pytest.raises(ConfigError, match="no id column 'id'"):
        open_catalog(tmp_path / "items.csv", id_column="id", text_template="{title}")
    with pytest.raises(ConfigError, match=r"columns \['size'\] are not in"):
        open_catalog(
            tmp_path / "items.csv", id_column="sku", columns=["size"], text_template="{title}"
        )


def test_rows_without_id_get_an_empty_id(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text(
        "id,productDisplayName\n,No id here\n 7 ,Seven\n", encoding="utf-8"
    )
    (tmp_path / "images").mkdir()
    products = list(open_catalog(tmp_path / "s.csv"))
    assert [p.product_id for p in products] == ["", "7"]
    assert products[0].image_path is None  # no id, no image file name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (float("nan"), None),
        ("", None),
        ("  ", None),
        (b"\x00", None),
        (3, 3),
        (2.5, 2.5),
        (True, True),
        ("Red", "Red"),
        ([1, None, ""], [1]),
    ],
)
def test_clean_value(value: Any, expected: Any) -> None:
    assert clean_value(value) == expected


def test_id_string_and_render_template() -> None:
    assert [id_string(v) for v in (12, 12.0, " a1 ", None, float("nan"), "")] == [
        "12",
        "12",
        "a1",
        "",
        "",
        "",
    ]
    assert render_template("{a}  {b} {c}", {"a": "x", "b": None, "c": float("nan")}) == "x"


# --------------------------------------------------------------------------- the real catalog


@pytest.mark.catalog
def test_catalog_copy_loads_through_the_parquet_reader() -> None:
    catalog = open_catalog(Settings().catalog, limit=500)
    assert isinstance(catalog, ParquetCatalog)
    products = list(catalog)
    assert len(products) == 500
    ids = [p.product_id for p in products]
    assert len(set(ids)) == 500 and all(i.isdigit() for i in ids)
    keys = {
        "gender",
        "masterCategory",
        "subCategory",
        "articleType",
        "baseColour",
        "season",
        "year",
        "usage",
        "productDisplayName",
    }
    for product in products:
        assert set(product.metadata) <= keys
        assert {"gender", "articleType", "productDisplayName"} <= set(product.metadata)
        assert all(
            isinstance(v, int) if k == "year" else isinstance(v, str) and v.strip()
            for k, v in product.metadata.items()
        )
        # The text is the name (runs of whitespace collapsed: "Quechua  Blue Sipper"), then
        # the attributes.
        name = " ".join(product.metadata["productDisplayName"].split())
        assert product.text.startswith(name + ", " + product.metadata["gender"])
    images = [p.load_image() for p in products]
    assert all(img.mode == "RGB" and img.size[0] > 0 for img in images)
    assert sum(img.size == (60, 80) for img in images) > 400


def test_parse_columns_from_the_command_line() -> None:
    assert parse_columns(None) is None and parse_columns(" ") is None
    assert parse_columns("gender, year") == ["gender", "year"]
    assert parse_columns("title=productDisplayName, colour=baseColour") == {
        "title": "productDisplayName",
        "colour": "baseColour",
    }
    with pytest.raises(ConfigError, match="either names to keep"):
        parse_columns("gender,title=productDisplayName")
    with pytest.raises(ConfigError, match="either names to keep"):
        parse_columns("title=")


def test_parquet_without_images_needs_an_image_folder(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [5], "productDisplayName": ["Five"]}), tmp_path / "t.parquet")
    with pytest.raises(ConfigError, match="no image column; name it"):
        open_catalog(tmp_path / "t.parquet")
    with pytest.raises(ConfigError, match="no image column 'image'"):
        open_catalog(tmp_path / "t.parquet", image_column="image")
    write_image(tmp_path / "imgs" / "5.jpg", (1, 2, 3))
    (product,) = open_catalog(tmp_path / "t.parquet", images=tmp_path / "imgs")
    assert product.image_path == tmp_path / "imgs" / "5.jpg" and product.load_image().size == (
        60,
        80,
    )


def test_a_field_has_one_type_and_values_that_do_not_fit_are_named(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{2010 + i},{9 + i}.5,Shirt {i}" for i in range(1, 9))
    (tmp_path / "s.csv").write_text(
        f"id,year,price,productDisplayName\n{rows}\n9,2012a,12,Odd\n10,,n/a,Blank\n",
        encoding="utf-8",
    )
    products = list(open_catalog(tmp_path / "s.csv", images=tmp_path))
    assert products[0].metadata == {"year": 2011, "price": 10.5, "productDisplayName": "Shirt 1"}
    odd, blank = products[8], products[9]
    assert odd.metadata == {"price": 12.0, "productDisplayName": "Odd"}
    assert odd.value_errors == {"year": "'2012a' is not an integer"}
    assert blank.metadata == {"productDisplayName": "Blank"}  # an empty cell is no error
    assert blank.value_errors == {"price": "'n/a' is not a number"}
    assert all(not p.value_errors for p in products[:8])
    # A column of words with a few numbers stays text, numbers included.
    (tmp_path / "t.csv").write_text("id,size,name\n1,M,a\n2,L,b\n3,32,c\n", encoding="utf-8")
    sizes = [
        p.metadata["size"]
        for p in open_catalog(tmp_path / "t.csv", images=tmp_path, text_template="{name}")
    ]
    assert sizes == ["M", "L", "32"]
