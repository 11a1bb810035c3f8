"""Image decoding (:mod:`clipy_qdrant.encoders.images`) on real files: EXIF orientation, the
pixel cap, RGB conversion, padding; and one upright image on every path (query images, ingest,
encoders).

A phone-style file stores its pixels in sensor order plus an EXIF orientation tag. Each test
builds one from an asymmetric picture and writes the "upright file": the phone file's own
decoded pixels turned by numpy as the tag says, saved losslessly (PNG). Decoding the phone file
must give exactly those pixels, so every vector of it equals the upright file's.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fake_encoder import FakeEncoder
from PIL import ExifTags, Image, ImageDraw

from clipy_qdrant.encoders.images import (
    MAX_IMAGE_PIXELS,
    decode_image,
    pad_to_square,
    to_rgb,
)
from clipy_qdrant.errors import InputError
from clipy_qdrant.search import Searcher, load_query_image
from clipy_qdrant.store import IMAGE, open_store
from ingest.pipeline import run_ingest
from ingest.readers import open_catalog

#: EXIF orientation -> the np.rot90 turns that show the stored pixels upright.
ORIENTATION_TURNS = {3: 2, 6: -1, 8: 1}


def scene(size: tuple[int, int] = (48, 64), hue: int = 0) -> Image.Image:
    """An upright product-like picture whose quarters differ: turned, it is another picture."""
    w, h = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle([2, 2, w // 2, h // 3], fill=((200 + hue) % 256, 30, 40))  # top left
    draw.rectangle([w // 3, h * 2 // 3, w - 3, h - 3], fill=(30, 60, (190 + hue) % 256))  # bottom
    draw.rectangle([w - 8, 4, w - 3, h // 2], fill=(40, (150 + hue) % 256, 50))  # right stripe
    return image


def phone_photo(tmp_path: Path, orientation: int, picture: Image.Image | None = None) -> Path:
    """A JPEG whose pixels are ``picture`` turned away from upright, tagged ``orientation``."""
    picture = picture if picture is not None else scene()
    stored = np.rot90(np.asarray(picture), -ORIENTATION_TURNS[orientation])
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    path = tmp_path / f"phone-{orientation}.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, quality=95, exif=exif.tobytes())
    return path


def upright_file(phone: Path, orientation: int) -> Path:
    """The phone file's decoded pixels turned upright by numpy, saved as PNG."""
    with Image.open(phone) as raw:
        assert raw.getexif()[ExifTags.Base.Orientation] == orientation
        pixels = np.asarray(raw.convert("RGB"))
    upright = np.ascontiguousarray(np.rot90(pixels, ORIENTATION_TURNS[orientation]))
    path = phone.with_name(f"upright-{orientation}.png")
    Image.fromarray(upright).save(path)
    return path


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


@pytest.mark.parametrize("orientation", sorted(ORIENTATION_TURNS))
def test_a_phone_photo_decodes_upright_from_every_kind_of_source(
    tmp_path: Path, orientation: int
) -> None:
    phone = phone_photo(tmp_path, orientation)
    upright = upright_file(phone, orientation)
    want = pixels(Image.open(upright))
    # The construction is right: the upright file is the picture (up to JPEG loss).
    assert np.abs(want.astype(int) - pixels(scene()).astype(int)).mean() < 6
    with phone.open("rb") as handle:
        sources = [phone, str(phone), phone.read_bytes(), handle, Image.open(phone)]
        for source in sources:
            decoded = decode_image(source)
            assert decoded.mode == "RGB" and decoded.size == (48, 64)
            np.testing.assert_array_equal(pixels(decoded), want)
            # The tag is gone: decoding the result again does not turn it a second time.
            assert decoded.getexif().get(ExifTags.Base.Orientation) in (None, 1)
            assert decode_image(decoded) is decoded
    np.testing.assert_array_equal(pixels(load_query_image(phone)), want)


def test_an_upright_rgb_image_is_returned_as_it_is(tmp_path: Path) -> None:
    image = scene()
    assert decode_image(image) is image
    path = tmp_path / "upright.jpg"
    image.save(path, quality=95)
    np.testing.assert_array_equal(pixels(decode_image(path)), pixels(Image.open(path)))


@pytest.mark.parametrize("orientation", sorted(ORIENTATION_TURNS))
def test_a_phone_query_photo_finds_and_embeds_like_the_upright_file(
    tmp_path: Path, orientation: int
) -> None:
    """Library Searcher, fake encoder, in-memory qdrant-client: a catalog of upright pictures
    (the upright file among them); the phone query's vector and hits equal the upright query's."""
    phone = phone_photo(tmp_path, orientation)
    upright = upright_file(phone, orientation)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    Image.open(upright).save(catalog / "1.png")
    for i, hue in enumerate((60, 120, 180), start=2):
        scene(hue=hue).save(catalog / f"{i}.png")
    encoder = FakeEncoder()
    store = open_store(url=":memory:")
    try:
        run_ingest(open_catalog(catalog), store, encoder, progress=False)
        searcher = Searcher(store, encoder)
        phone_query, upright_query = searcher.embed(image=phone), searcher.embed(image=upright)
        np.testing.assert_array_equal(phone_query.image, upright_query.image)
        hits = searcher.search(image=phone, k=4)
        assert hits[0].product_id == "1.png" and hits[0].image_score == pytest.approx(1.0, abs=1e-5)
        again = searcher.search(image=upright, k=4)
        assert [h.product_id for h in hits] == [h.product_id for h in again]
        # Equal query vectors; the in-memory engine's float32 products may differ in the last bits.
        assert [h.score for h in hits] == pytest.approx([h.score for h in again], abs=1e-6)
    finally:
        store.close()


@pytest.mark.parametrize("orientation", sorted(ORIENTATION_TURNS))
def test_ingesting_a_phone_photo_stores_the_upright_files_image_vector(
    tmp_path: Path, orientation: int
) -> None:
    phone = phone_photo(tmp_path, orientation)
    upright = upright_file(phone, orientation)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "phone.jpg").write_bytes(phone.read_bytes())
    (catalog / "upright.png").write_bytes(upright.read_bytes())
    store = open_store(tmp_path / "store")
    try:
        report = run_ingest(open_catalog(catalog), store, FakeEncoder(), progress=False)
        assert report.stored == 2
        vectors = {p.product_id: p.vectors[IMAGE] for p in store.scroll(with_vectors=True)}
    finally:
        store.close()
    np.testing.assert_array_equal(vectors["phone.jpg"], vectors["upright.png"])


@pytest.mark.slow
def test_fashion_mini_embeds_a_phone_photo_like_the_upright_file(tmp_path: Path) -> None:
    """The shipped encoder through the Searcher: the phone query's vector is the upright
    file's, bit for bit, and differs from what the sideways pixels give."""
    from clipy_qdrant.encoders import get_encoder

    encoder = get_encoder("fashion-mini")
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    uprights = {}
    for orientation in sorted(ORIENTATION_TURNS):
        phone = phone_photo(tmp_path, orientation, scene(hue=70 * orientation))
        uprights[orientation] = (phone, upright_file(phone, orientation))
        Image.open(uprights[orientation][1]).save(catalog / f"{orientation}.png")
    store = open_store(url=":memory:")
    try:
        run_ingest(open_catalog(catalog), store, encoder, progress=False)
        searcher = Searcher(store, encoder)
        for orientation, (phone, upright) in uprights.items():
            query = searcher.embed(image=phone).image
            np.testing.assert_array_equal(query, searcher.embed(image=upright).image)
            assert searcher.search(image=phone, k=1)[0].product_id == f"{orientation}.png"
            sideways = Image.fromarray(pixels(Image.open(phone).convert("RGB")))  # tag dropped
            assert float(encoder.encode_images([sideways])[0] @ query) < 0.99
    finally:
        store.close()


# --------------------------------------------------------------------------- errors and cap


def test_errors_are_one_line_and_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^image .*nope\.jpg does not exist$"):
        decode_image(tmp_path / "nope.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"^image .*junk\.jpg cannot be decoded: ") as caught:
        decode_image(tmp_path / "junk.jpg")
    assert "\n" not in str(caught.value)
    good = io.BytesIO()
    scene().save(good, format="JPEG")
    with pytest.raises(InputError, match=r"^product 7 image cannot be decoded"):
        decode_image(good.getvalue()[:200], name="product 7 image")
    with pytest.raises(InputError, match=r"^image bytes cannot be decoded"):
        decode_image(b"")
    with pytest.raises(InputError, match="is a folder"):
        decode_image(tmp_path)


def test_images_above_the_pixel_cap_are_refused_before_decoding(tmp_path: Path) -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    path = tmp_path / "huge.png"
    # A PNG header that announces side x side pixels; decoding its pixels would need GBs.
    Image.new("1", (side, side)).save(path)
    assert path.stat().st_size < 5_000_000
    with pytest.raises(InputError, match=r"huge\.png is \d+x\d+ pixels, more than the"):
        decode_image(path)
    with pytest.raises(InputError, match="more than the"):
        decode_image(Image.new("1", (side, side)))


# --------------------------------------------------------------------------- RGB conversion


def test_to_rgb_flattens_transparency_onto_white_and_scales_16_bit(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    flat = to_rgb(rgba)
    assert flat.getpixel((0, 0)) == (255, 0, 0) and flat.getpixel((1, 1)) == (255, 255, 255)
    assert to_rgb(Image.new("LA", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)

    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0, 10, 200, 30])
    palette.putpixel((1, 1), 1)
    palette.info["transparency"] = 0
    path = tmp_path / "palette.png"
    palette.save(path, transparency=0)
    decoded = decode_image(path)
    assert decoded.getpixel((0, 0)) == (255, 255, 255) and decoded.getpixel((1, 1)) == (10, 200, 30)

    grey16 = np.asarray([[0, 32768], [65535, 256]], dtype=np.uint16)
    path16 = tmp_path / "grey16.png"
    Image.fromarray(grey16).save(path16)
    assert Image.open(path16).mode.startswith("I")
    decoded16 = decode_image(path16)
    assert pixels(decoded16)[:, :, 0].tolist() == [[0, 128], [255, 1]]

    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red ink
    path_cmyk = tmp_path / "cmyk.jpg"
    cmyk.save(path_cmyk, quality=100)
    red, green, blue = decode_image(path_cmyk).getpixel((0, 0))
    assert red > 200 and green < 60 and blue < 60


def test_pad_to_square_centres_on_white() -> None:
    padded = pad_to_square(Image.new("RGB", (2, 4), (10, 20, 30)))
    assert padded.size == (4, 4)
    assert padded.getpixel((0, 0)) == (255, 255, 255) and padded.getpixel((1, 2)) == (10, 20, 30)
    square = Image.new("RGB", (3, 3))
    assert pad_to_square(square) is square
