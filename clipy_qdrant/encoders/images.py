"""Image loading for every path (ingest, query images, encoders): one decoder, one RGB rule.

:func:`decode_image` turns bytes, a path, a binary file object or a PIL image into an upright
RGB image:

* the EXIF orientation tag is applied (``ImageOps.exif_transpose``): phones store pixels in
  sensor order and the orientation in a tag, so without it a phone photo is embedded sideways;
  the result carries no orientation tag, so decoding it again does not rotate it twice;
* images above :data:`MAX_IMAGE_PIXELS` are refused before their pixels are decoded
  (decompression bombs);
* :func:`to_rgb` converts any mode to RGB, transparency flattened onto white.

Every failure is a one-line :class:`~clipy_qdrant.errors.InputError` naming the source.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageOps

from clipy_qdrant.errors import InputError

#: Largest image decoded, in pixels: a 64-megapixel phone photo fits, and the cap stays below
#: Pillow's own decompression-bomb warning (about 89 megapixels).
MAX_IMAGE_PIXELS = 80_000_000
#: What transparent pixels and padding become: the catalog's products are shot on white.
BACKGROUND_RGB = (255, 255, 255)
#: Modes whose samples are 16 bits wide (``I`` holds 16-bit PNG greyscale on some Pillows).
_WIDE_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}

ImageSource = Image.Image | bytes | str | Path | IO[bytes]


def decode_image(source: ImageSource, *, name: str | None = None) -> Image.Image:
    """``source`` as an upright RGB image, or a one-line InputError naming it (or ``name``).

    A PIL image that is already RGB, upright and small enough is returned as it is.
    """
    what = name or describe_source(source)
    image = source if isinstance(source, Image.Image) else _open(source, what)
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{what} is {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} allowed; "
            "shrink it first"
        )
    try:
        image.load()
        return to_rgb(upright(image))
    except Exception as exc:  # truncated or corrupt data surfaces when pixels are read
        raise InputError(f"{what} cannot be decoded: {_first_line(exc)}") from None


def describe_source(source: ImageSource) -> str:
    """How messages name an image source: ``image <path>``, ``image bytes``…"""
    if isinstance(source, Image.Image):
        return "image"
    if isinstance(source, bytes | bytearray):
        return "image bytes"
    if isinstance(source, str | Path):
        return f"image {source!s}"
    file_name = getattr(source, "name", None)
    return f"image {file_name}" if isinstance(file_name, str) else "image file"


def _open(source: bytes | str | Path | IO[bytes], what: str) -> Image.Image:
    """The opened (not yet decoded) image: its size is known, its pixels are not read yet."""
    try:
        if isinstance(source, bytes | bytearray):
            return Image.open(io.BytesIO(source))
        return Image.open(Path(source) if isinstance(source, str) else source)
    except FileNotFoundError:
        raise InputError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a folder, not an image file") from None
    except Exception as exc:  # Pillow raises many types for data it cannot identify
        raise InputError(f"{what} cannot be decoded: {_first_line(exc)}") from None


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation tag says (the same object when there is none)."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels: transparency (alpha, palette transparency) is flattened onto white, 16-bit
    greyscale is scaled to 8 bits (Pillow would clip it), CMYK and the rest are converted."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_MODES:
        samples = np.asarray(image).astype(np.int64)
        grey = (np.clip(samples, 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND_RGB)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def pad_to_square(image: Image.Image) -> Image.Image:
    """The image (as RGB) centred on a white square canvas."""
    image = to_rgb(image)
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), BACKGROUND_RGB)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
