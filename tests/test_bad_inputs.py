"""The bad-input corpus (issue #19): every kind of broken or odd input, generated here, through
the real readers and pipeline (fake encoder, embedded store).

Each case is a catalog of good rows plus one bad input. A bad input is either stored (an odd
but valid input: CMYK, 16-bit, 1x1, unicode id…) or skipped with a one-line reason naming its
file and row; the good rows are always stored, and a store that already held products loses
none of them. The table of kinds is in docs/reliability.md.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from corpus import (
    GOOD,
    LayoutEncoder,
    csv_case,
    image_bytes,
    ingest_into,
    stored_ids,
    write_csv,
    write_good_images,
    write_jsonl,
)
from fake_encoder import register_fake
from PIL import Image
from typer.testing import CliRunner

from clipy_qdrant.errors import ClipyError
from clipy_qdrant.filters import parse_filter
from ingest.cli import app
from ingest.pipeline import BAD_ROW, DUPLICATE_ID, MISSING_IMAGE, NO_ID, UNREADABLE_IMAGE

GOOD_IDS = {row["id"] for row in GOOD}


@pytest.fixture(scope="module", autouse=True)
def _fake() -> None:
    register_fake()


def _bad(**extra: Any) -> dict[str, Any]:
    return {
        "id": "bad",
        "productDisplayName": "Odd input",
        "baseColour": "Pink",
        "year": 2020,
        **extra,
    }


def _exif_rotated(upright: Image.Image) -> bytes:
    """A phone-style JPEG: the pixels stored rotated 90° with EXIF orientation 6."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", exif=exif, quality=95)
    return buffer.getvalue()


def _two_colour(size: tuple[int, int] = (40, 64)) -> Image.Image:
    image = Image.new("RGB", size, (230, 30, 30))
    image.paste(Image.new("RGB", (size[0], size[1] // 4), (20, 40, 220)), (0, 0))
    return image


def _png_16bit() -> bytes:
    array = (np.linspace(0, 65535, 24 * 32).reshape(32, 24)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _palette_transparent() -> bytes:
    image = Image.new("P", (24, 24), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 12, 24))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)
    return buffer.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


def _huge_header_png(width: int, height: int) -> bytes:
    """A real 1×1 PNG whose header claims ``width`` × ``height``: the pixel cap refuses it
    before decoding, without this test allocating the pixels."""
    data = image_bytes(size=(1, 1), fmt="PNG")
    ihdr = data.index(b"IHDR")
    import zlib

    body = struct.pack(">II", width, height) + data[ihdr + 12 : ihdr + 17]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return data[: ihdr + 4] + body + crc + data[ihdr + 21 :]


# -- image cases: (bad image bytes, file suffix, None = stored / (kind, words in reason)) -------

IMAGE_CASES: dict[str, tuple[Callable[[], bytes], str, tuple[str, str] | None]] = {
    "corrupt": (lambda: os.urandom(2000), ".jpg", (UNREADABLE_IMAGE, "unreadable image")),
    "truncated": (
        lambda: image_bytes(size=(200, 200))[:300],
        ".jpg",
        (UNREADABLE_IMAGE, "unreadable image"),
    ),
    "zero-byte": (lambda: b"", ".jpg", (UNREADABLE_IMAGE, "unreadable image")),
    "png-named-jpg": (lambda: image_bytes(fmt="PNG"), ".jpg", None),
    "cmyk": (lambda: image_bytes(mode="CMYK"), ".jpg", None),
    "16-bit": (_png_16bit, ".png", None),
    "palette-transparency": (_palette_transparent, ".png", None),
    "greyscale": (lambda: image_bytes(mode="L"), ".jpg", None),
    "animated-gif": (_animated_gif, ".gif", None),
    "1x1": (lambda: image_bytes(size=(1, 1)), ".jpg", None),
    "huge-dimensions": (
        lambda: _huge_header_png(100_000, 100_000),
        ".png",
        (UNREADABLE_IMAGE, "decompression bomb"),
    ),
    "unsupported-format": (
        lambda: b"<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>",
        ".svg",
        (UNREADABLE_IMAGE, "not an image format"),
    ),
    "text-file-as-image": (lambda: b"hello, not an image\n", ".jpg", (UNREADABLE_IMAGE, "")),
}


def _check_skipped(report: Any, kind: str, words: str, where: str) -> None:
    issues = [i for i in report.issues if i.product_id == "bad" or i.kind == kind]
    assert issues, f"no issue reported; issues: {report.issues}"
    issue = issues[0]
    assert issue.kind == kind, issue
    assert words in issue.reason, issue.reason
    assert "\n" not in issue.reason and "Traceback" not in issue.reason
    assert where in issue.where(), issue.where()


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_image_in_csv_catalog(case: str, tmp_path: Path) -> None:
    make, suffix, expected = IMAGE_CASES[case]
    source = csv_case(tmp_path / "cat", _bad(), make(), suffix)
    report, store = ingest_into(tmp_path / "store", source)
    try:
        ids = stored_ids(store)
    finally:
        store.close()
    assert ids >= GOOD_IDS
    if expected is None:
        assert "bad" in ids and report.skipped_total == 0, report.issues
    else:
        assert "bad" not in ids
        _check_skipped(report, *expected, where="styles.csv line 4 (id bad)")
        assert report.issues[0].file and report.issues[0].file.endswith(f"bad{suffix}")


def test_missing_image_file_is_named(tmp_path: Path) -> None:
    source = csv_case(tmp_path / "cat", _bad())
    report, store = ingest_into(tmp_path / "store", source)
    store.close()
    _check_skipped(report, MISSING_IMAGE, "missing image file", "styles.csv line 4")
    assert "bad.jpg" in report.issues[0].reason


def test_exif_rotated_phone_photo_stores_the_upright_vector(tmp_path: Path) -> None:
    """Orientation 6 (the way phones store portrait photos) is applied before encoding."""
    upright = _two_colour()
    write_good_images(tmp_path / "cat" / "images")
    buffer = io.BytesIO()
    upright.save(buffer, "JPEG", quality=95)
    (tmp_path / "cat" / "images" / "upright.jpg").write_bytes(buffer.getvalue())
    (tmp_path / "cat" / "images" / "rotated.jpg").write_bytes(_exif_rotated(upright))
    rows = [*GOOD, {**_bad(), "id": "upright"}, {**_bad(), "id": "rotated"}]
    source = write_csv(tmp_path / "cat" / "styles.csv", rows)
    _, store = ingest_into(tmp_path / "store", source, encoder=LayoutEncoder())
    try:
        points = {
            p.product_id: p for p in store.retrieve(["upright", "rotated"], with_vectors=True)
        }
    finally:
        store.close()
    upright_vector, rotated_vector = (
        points["upright"].vectors["image"],
        points["rotated"].vectors["image"],
    )
    # JPEG noise only: the vectors of the same picture the other way up differ far more.
    np.testing.assert_allclose(rotated_vector, upright_vector, atol=0.02)


def test_pixel_cap_refuses_a_bomb_that_decodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real image over the pixel cap (lowered here to keep the test small) is refused."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    source = csv_case(tmp_path / "cat", _bad(), image_bytes(size=(100, 100), fmt="PNG"), ".png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    report, store = ingest_into(tmp_path / "store", source)
    store.close()
    # The good images are 24x32 = 768 pixels, under the cap.
    _check_skipped(report, UNREADABLE_IMAGE, "decompression bomb", "line 4")


# -- ids ---------------------------------------------------------------------------------------


def _jsonl_case(root: Path, bad: dict[str, Any] | str) -> Path:
    write_good_images(root / "images")
    (root / "images" / "bad.jpg").write_bytes(image_bytes())
    return write_jsonl(root / "products.jsonl", [*GOOD[:2], bad, *GOOD[2:]])


@pytest.mark.parametrize(
    ("case", "bad_id", "kind"),
    [
        ("missing-id", None, NO_ID),
        ("empty-id", "", NO_ID),
        ("blank-id", "   ", NO_ID),
        ("duplicate-id", "g1", DUPLICATE_ID),
    ],
)
def test_unusable_ids_are_reported(case: str, bad_id: Any, kind: str, tmp_path: Path) -> None:
    row = {k: v for k, v in _bad(id=bad_id).items() if not (case == "missing-id" and k == "id")}
    source = _jsonl_case(tmp_path / "cat", row)
    report, store = ingest_into(tmp_path / "store", source)
    try:
        assert stored_ids(store) == GOOD_IDS
    finally:
        store.close()
    _check_skipped(report, kind, "id", "products.jsonl line 3")


@pytest.mark.parametrize(
    ("case", "bad_id", "stored_as"),
    [
        ("integer-id", 12345, "12345"),
        ("float-id", 12.0, "12"),
        ("bool-id", True, "True"),
        ("very-long-id", "x" * 10_000, "x" * 10_000),
        ("unicode-id", "ĸ-商品-🧥-مرحبا", "ĸ-商品-🧥-مرحبا"),
    ],
)
def test_odd_ids_are_stored_as_strings(
    case: str, bad_id: Any, stored_as: str, tmp_path: Path
) -> None:
    (tmp_path / "cat" / "images").mkdir(parents=True)
    write_good_images(tmp_path / "cat" / "images")
    rows = [*GOOD, {**_bad(id=bad_id), "image": "odd.jpg"}]
    (tmp_path / "cat" / "images" / "odd.jpg").write_bytes(image_bytes())
    source = write_jsonl(tmp_path / "cat" / "products.jsonl", rows)
    report, store = ingest_into(tmp_path / "store", source)
    try:
        assert stored_ids(store) == GOOD_IDS | {stored_as}, report.issues
        assert store.retrieve([stored_as])[0].payload["productDisplayName"] == "Odd input"
    finally:
        store.close()


@pytest.mark.parametrize("bad_id", [[1, 2], {"a": 1}], ids=["list-id", "object-id"])
def test_structured_ids_are_stored_or_named(bad_id: Any, tmp_path: Path) -> None:
    """An id that is a list or an object is never silently lost: stored under its text or
    reported with its line."""
    (tmp_path / "cat" / "images").mkdir(parents=True)
    write_good_images(tmp_path / "cat" / "images")
    (tmp_path / "cat" / "images" / "odd.jpg").write_bytes(image_bytes())
    source = write_jsonl(
        tmp_path / "cat" / "products.jsonl", [*GOOD, {**_bad(id=bad_id), "image": "odd.jpg"}]
    )
    report, store = ingest_into(tmp_path / "store", source)
    try:
        ids = stored_ids(store)
    finally:
        store.close()
    assert ids >= GOOD_IDS
    assert len(ids) == len(GOOD_IDS) + 1 or any("line 5" in i.where() for i in report.issues)


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "name"),
    [
        ("empty-name", ""),
        ("100kb-name", "long " * 20_000),
        ("emoji-rtl-name", "👗 فستان أحمر ‏ Red dress 🔥"),
        ("nul-name", "red\x00dress"),
    ],
)
def test_odd_names_are_stored(case: str, name: str, tmp_path: Path) -> None:
    source = _jsonl_case(tmp_path / "cat", _bad(productDisplayName=name))
    report, store = ingest_into(tmp_path / "store", source)
    try:
        assert stored_ids(store) == GOOD_IDS | {"bad"}, report.issues
        payload = store.retrieve(["bad"])[0].payload
    finally:
        store.close()
    assert payload.get("productDisplayName") == (name if name.strip() else None)


def test_nul_in_a_csv_cell_is_stored_or_named(tmp_path: Path) -> None:
    source = csv_case(tmp_path / "cat", _bad(productDisplayName="red\x00dress"), image_bytes())
    try:
        report, store = ingest_into(tmp_path / "store", source)
    except ClipyError as exc:  # a reader that refuses the file names it, on one line
        assert "styles.csv" in str(exc) and "\n" not in str(exc)
        return
    try:
        assert stored_ids(store) >= GOOD_IDS
    finally:
        store.close()
    assert "bad" in stored_ids_of(tmp_path / "store") or report.skipped_total == 1


def stored_ids_of(path: Path) -> set[str]:
    from clipy_qdrant.store import open_store

    with open_store(path) as store:  # type: ignore[attr-defined]
        return stored_ids(store)


# -- types and columns ---------------------------------------------------------------------------


def test_bad_year_cell_is_named_and_the_range_filter_still_works(tmp_path: Path) -> None:
    """year="2012a" in an integer column: reported with file, row and field, left out of that
    product's payload; the other products keep an integer year that a range filter finds."""
    source = csv_case(tmp_path / "cat", _bad(year="2012a"), image_bytes())
    report, store = ingest_into(tmp_path / "store", source)
    try:
        assert GOOD_IDS | {"bad"} == stored_ids(store)
        found = store.count(parse_filter(["year>=2010"]))
        assert "year" not in store.retrieve(["bad"])[0].payload
    finally:
        store.close()
    assert found == len(GOOD)
    text = " ".join(f"{i.where()} {i.reason}" for i in report.issues)
    assert "styles.csv" in text and "line 4" in text and "year" in text and "2012a" in text


def test_list_where_a_string_belongs(tmp_path: Path) -> None:
    source = _jsonl_case(tmp_path / "cat", _bad(baseColour=["Red", "Blue"]))
    report, store = ingest_into(tmp_path / "store", source)
    try:
        assert stored_ids(store) >= GOOD_IDS
        if "bad" in stored_ids(store):
            assert store.retrieve(["bad"])[0].payload["baseColour"] == ["Red", "Blue"]
        else:
            _check_skipped(report, BAD_ROW, "baseColour", "products.jsonl line 3")
    finally:
        store.close()


def test_missing_and_extra_columns(tmp_path: Path) -> None:
    bad = {"id": "bad", "productDisplayName": "Odd input", "surprise": "extra value"}
    source = _jsonl_case(tmp_path / "cat", bad)
    _, store = ingest_into(tmp_path / "store", source)
    try:
        assert stored_ids(store) == GOOD_IDS | {"bad"}
        payload = store.retrieve(["bad"])[0].payload
    finally:
        store.close()
    assert payload["surprise"] == "extra value" and "year" not in payload


def test_jsonl_bad_line_in_the_middle(tmp_path: Path) -> None:
    source = _jsonl_case(tmp_path / "cat", '{"id": "bad", "productDisplayName": ')
    report, store = ingest_into(tmp_path / "store", source)
    try:
        assert stored_ids(store) == GOOD_IDS
    finally:
        store.close()
    _check_skipped(report, BAD_ROW, "invalid JSON", "products.jsonl line 3")


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    source = _jsonl_case(tmp_path / "cat", "[1, 2, 3]")
    report, store = ingest_into(tmp_path / "store", source)
    store.close()
    _check_skipped(report, BAD_ROW, "expected a JSON object", "products.jsonl line 3")


def _cli_ingest(source: Path, store: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        app,
        ["ingest", str(source), "--store", str(store), "--encoder", "fake", *extra],
    )


def test_header_only_csv_is_an_error_and_leaves_no_store(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    source = tmp_path / "styles.csv"
    source.write_text("id,productDisplayName,year\n", encoding="utf-8")
    result = _cli_ingest(source, tmp_path / "store", "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipy: error:")]
    assert len(errors) == 1 and "styles.csv" in errors[0]
    assert not (tmp_path / "store").exists()


def test_csv_with_a_bom_reads_its_id_column(tmp_path: Path) -> None:
    write_good_images(tmp_path / "images")
    source = write_csv(tmp_path / "styles.csv", GOOD)
    source.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    _, store = ingest_into(tmp_path / "store", source)
    try:
        assert stored_ids(store) == GOOD_IDS
    finally:
        store.close()


def test_semicolon_csv_is_read_or_named(tmp_path: Path) -> None:
    """A ``;``-delimited CSV: every row stored, or one line naming the file and the id column."""
    write_good_images(tmp_path / "images")
    source = write_csv(tmp_path / "styles.csv", GOOD, delimiter=";")
    result = _cli_ingest(source, tmp_path / "store", "--report", str(tmp_path / "r.json"))
    if result.exit_code == 0:
        assert stored_ids_of(tmp_path / "store") == GOOD_IDS
    else:
        assert result.exit_code == 1 and result.stderr.strip().count("\n") == 0
        assert "styles.csv" in result.stderr and "id" in result.stderr


def test_parquet_folder_with_a_different_schema_in_one_file(tmp_path: Path) -> None:
    """Two parquet files of one dataset, the second with other columns: its rows are stored
    with what they have (or named), the first file's rows are all stored."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "data"
    folder.mkdir()
    first = {
        "id": [r["id"] for r in GOOD],
        "productDisplayName": [r["productDisplayName"] for r in GOOD],
        "year": [r["year"] for r in GOOD],
        "image": [{"bytes": image_bytes(), "path": None} for _ in GOOD],
    }
    pq.write_table(pa.table(first), folder / "train-00000.parquet")
    second = {
        "id": ["p1", "p2"],
        "name": ["other schema", "no display name"],
        "year": ["2012a", "2013"],
        "image": [{"bytes": image_bytes(), "path": None}, {"bytes": b"broken", "path": None}],
    }
    pq.write_table(pa.table(second), folder / "train-00001.parquet")
    try:
        report, store = ingest_into(tmp_path / "store", folder)
    except ClipyError as exc:
        assert "parquet" in str(exc) and "\n" not in str(exc)
        return
    try:
        ids = stored_ids(store)
    finally:
        store.close()
    assert ids >= GOOD_IDS and "p1" in ids
    _check_skipped(report, UNREADABLE_IMAGE, "unreadable image", "train-00001.parquet row 1")


def test_image_folder_with_subfolders_non_images_and_a_symlink_loop(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "dresses" / "summer").mkdir(parents=True)
    (root / "top.jpg").write_bytes(image_bytes())
    (root / "dresses" / "red.png").write_bytes(image_bytes(fmt="PNG"))
    (root / "dresses" / "summer" / "blue.jpg").write_bytes(image_bytes((20, 40, 220)))
    (root / "notes.txt").write_text("not an image")
    (root / "dresses" / "Thumbs.db").write_bytes(b"\x00" * 64)
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    os.symlink(root, root / "dresses" / "loop")
    report, store = ingest_into(tmp_path / "store", root)
    try:
        ids = stored_ids(store)
        folder = store.retrieve(["dresses/summer/blue.jpg"])[0].payload["folder"]
    finally:
        store.close()
    assert {"top.jpg", "dresses/red.png", "dresses/summer/blue.jpg"} <= ids
    assert not any("loop" in i for i in ids) or len(ids) < 50
    assert folder == "dresses/summer"
    _check_skipped(report, UNREADABLE_IMAGE, "unreadable image", str(root))
    assert report.issues[0].product_id == "broken.jpg"


def test_empty_image_folder_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "readme.txt").write_text("no images here")
    result = _cli_ingest(tmp_path / "photos", tmp_path / "store")
    assert result.exit_code == 1 and result.stderr.strip().count("\n") == 0
    assert "photos" in result.stderr


def test_every_bad_kind_together_loses_nothing_already_stored(tmp_path: Path) -> None:
    """A store holding the good products takes a catalog of every bad image kind at once:
    the good products are all still there, unchanged, and each bad one is stored or named."""
    write_good_images(tmp_path / "cat" / "images")
    source = write_csv(tmp_path / "cat" / "styles.csv", GOOD)
    report, store = ingest_into(tmp_path / "store", source)
    before = {p.product_id: p.payload["content_hash"] for p in store.scroll()}
    store.close()
    rows = list(GOOD)
    for name, (make, suffix, _) in sorted(IMAGE_CASES.items()):
        (tmp_path / "cat" / "images" / f"{name}{suffix}").write_bytes(make())
        rows.append({**_bad(), "id": name, "image": f"{name}{suffix}"})
    rows.append({**_bad(), "id": ""})
    rows.append({**_bad(), "id": "g0"})
    write_csv(tmp_path / "cat" / "styles.csv", rows)
    report, store = ingest_into(tmp_path / "store", source)
    try:
        after = {p.product_id: p.payload["content_hash"] for p in store.scroll()}
    finally:
        store.close()
    assert {k: after[k] for k in before} == before
    assert report.unchanged == len(GOOD)
    named = {i.product_id for i in report.issues}
    for name in IMAGE_CASES:
        assert (name in after) != (name in named), name
    assert len(after) + report.skipped_total == len(rows)
