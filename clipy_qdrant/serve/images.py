"""Checks on a query image received over HTTP, before anything decodes its pixels: its size
in bytes, its format (read from the data, never from a file name or a client's content
type) and its size in pixels (a small file can declare a huge image, a decompression bomb).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image

from clipy_qdrant.errors import InputError

#: Formats accepted as query images (PIL's names); a GIF is searched by its first frame.
IMAGE_FORMATS: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}


def decode_base64_image(text: str, max_bytes: int) -> bytes:
    """The bytes of a base64 image (a ``data:image/...;base64,`` URL is accepted)."""
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise InputError("image: a data URL must be base64 (data:image/...;base64,...)")
    # Base64 is 4 characters per 3 bytes: refuse an oversized image before decoding it.
    if len(text) > (max_bytes + 2) // 3 * 4 + 4:
        raise InputError(f"image is larger than the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("image is not valid base64") from None
    return data


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> str:
    """Check a query image's bytes; return its media type. Raises a one-line ``InputError``."""
    if not data:
        raise InputError("image is empty")
    if len(data) > max_bytes:
        raise InputError(f"image is {len(data)} bytes, larger than the limit of {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                fmt, (width, height) = img.format, img.size
    except Image.DecompressionBombError:
        raise InputError(f"image has too many pixels (limit {max_pixels})") from None
    except Image.DecompressionBombWarning:
        raise InputError(f"image has too many pixels (limit {max_pixels})") from None
    except Exception:  # PIL raises many types for data it cannot identify
        raise InputError(
            "image cannot be read; send a JPEG, PNG, WebP or GIF file's bytes"
        ) from None
    if fmt not in IMAGE_FORMATS:
        raise InputError(f"image format {fmt} is not accepted; send JPEG, PNG, WebP or GIF")
    if width * height > max_pixels:
        raise InputError(
            f"image is {width}x{height} pixels, more than the limit of {max_pixels} pixels"
        )
    return IMAGE_FORMATS[fmt]
