"""Shopper-photo perturbations of catalog images: pure functions of an image and a seeded RNG.

A shopper who photographs a product (or screenshots it) does not send the catalog's packshot:
the frame is cropped and slightly rotated, the picture is rescaled and JPEG-compressed, the
light shifts brightness, contrast and white balance, the product lies on a non-white surface
and the shot is a little blurred. Each transform here does one of those things, with its
strength drawn from a ``numpy.random.Generator``, so the same image and seed give the same
pixels. :data:`PERTURBATIONS` names them; ``"clean"`` applies none (the reference a
perturbed subset is compared with), ``"reshoot"`` the light re-shot of issue #18 (rotation,
crop, rescale, JPEG) and ``"all"`` every one, each composite in a fixed order.

Only PIL and numpy: nothing here depends on an encoder or a store.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

#: Each side of a crop keeps this fraction of the image (uniform within the bounds).
CROP_KEEP = (0.80, 0.92)
#: Rotation angle bounds in degrees (uniform within ±).
MAX_ROTATION = 8.0
#: The scale factor of each side when rescaling (log-uniform within the bounds).
RESCALE = (0.5, 2.0)
#: JPEG quality of the compression transform.
JPEG_QUALITY = 55
#: Brightness and contrast factors (uniform) and per-channel white-balance gains (uniform).
BRIGHTNESS = (0.8, 1.2)
CONTRAST = (0.8, 1.2)
WHITE_BALANCE = (0.9, 1.1)
#: Gaussian blur radius in pixels (uniform), at the catalog's scale (60×80).
BLUR_RADIUS = (0.5, 1.0)
#: A pixel is near-white (the catalog's background) when every channel is at least this.
WHITE_LEVEL = 232
#: The new background colour: every channel within these bounds, so never near-white.
BACKGROUND_LEVELS = (70, 200)


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop that keeps :data:`CROP_KEEP` (80–92 %) of each side."""
    image = _rgb(image)
    width, height = image.size
    keep_w, keep_h = rng.uniform(*CROP_KEEP, size=2)
    new_w = max(1, round(width * keep_w))
    new_h = max(1, round(height * keep_h))
    left = int(rng.integers(0, width - new_w + 1))
    top = int(rng.integers(0, height - new_h + 1))
    return image.crop((left, top, left + new_w, top + new_h))


def rotation_angle(rng: np.random.Generator) -> float:
    """An angle in degrees within ±:data:`MAX_ROTATION`."""
    return float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))


def border_colour(image: Image.Image) -> tuple[int, int, int]:
    """The median colour of the outermost pixels: the surface around the product."""
    rgb = np.asarray(_rgb(image), dtype=np.uint8)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    r, g, b = (int(v) for v in np.median(border, axis=0))
    return r, g, b


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A rotation within ±8° about the centre; the size is kept, and the corners it uncovers
    take the border's colour (white on a catalog image)."""
    image = _rgb(image)
    return image.rotate(
        rotation_angle(rng),
        resample=Image.Resampling.BICUBIC,
        expand=False,
        fillcolor=border_colour(image),
    )


def rescale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The image resized by one factor on both sides, log-uniform within :data:`RESCALE`
    (a phone photo is larger than the packshot, a forwarded thumbnail smaller)."""
    image = _rgb(image)
    factor = float(np.exp(rng.uniform(np.log(RESCALE[0]), np.log(RESCALE[1]))))
    width, height = image.size
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC)


def jpeg(
    image: Image.Image, rng: np.random.Generator | None = None, quality: int = JPEG_QUALITY
) -> Image.Image:
    """The image after a JPEG round trip at ``quality`` (default 55); ``rng`` is unused."""
    buffer = io.BytesIO()
    _rgb(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def lighting(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness and contrast scaled within ±20 %, and a white-balance shift: each channel
    multiplied by its own gain within ±10 %."""
    image = _rgb(image)
    brightness, contrast = rng.uniform(*BRIGHTNESS), rng.uniform(*CONTRAST)
    gains = rng.uniform(*WHITE_BALANCE, size=3)
    image = ImageEnhance.Brightness(image).enhance(float(brightness))
    image = ImageEnhance.Contrast(image).enhance(float(contrast))
    pixels = np.asarray(image, dtype=np.float32) * gains[None, None, :].astype(np.float32)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def border_background(rgb: np.ndarray, white_level: int = WHITE_LEVEL) -> np.ndarray:
    """Boolean (h, w) mask of the near-white pixels connected to the border (4-neighbours):
    the catalog's white background, not a white garment inside the frame."""
    near_white = rgb.min(axis=2) >= white_level
    mask = np.zeros_like(near_white)
    mask[0], mask[-1], mask[:, 0], mask[:, -1] = (
        near_white[0],
        near_white[-1],
        near_white[:, 0],
        near_white[:, -1],
    )
    while True:
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        grown &= near_white
        if np.array_equal(grown, mask):
            return mask
        mask = grown


def background_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A surface colour (a table, a bed, a floor): each channel within :data:`BACKGROUND_LEVELS`."""
    low, high = BACKGROUND_LEVELS
    r, g, b = (int(v) for v in rng.integers(low, high + 1, size=3))
    return r, g, b


def background(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The catalog's white background (near-white connected to the border) painted with a
    random non-white colour, with a little per-pixel noise as a real surface has."""
    rgb = np.asarray(_rgb(image), dtype=np.uint8).copy()
    mask = border_background(rgb)
    colour = np.asarray(background_colour(rng), dtype=np.int16)
    noise = rng.integers(-6, 7, size=(*rgb.shape[:2], 3), dtype=np.int16)
    surface = np.clip(colour[None, None, :] + noise, 0, 255).astype(np.uint8)
    rgb[mask] = surface[mask]
    return Image.fromarray(rgb, "RGB")


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A Gaussian blur with a radius within :data:`BLUR_RADIUS` pixels (slight defocus)."""
    radius = float(rng.uniform(*BLUR_RADIUS))
    return _rgb(image).filter(ImageFilter.GaussianBlur(radius))


Transform = Callable[[Image.Image, np.random.Generator], Image.Image]

#: Every single transform by name, in the order ``"all"`` applies them: the scene first
#: (surface, light), then the camera (rotation, framing, focus), then the file (size, JPEG).
TRANSFORMS: dict[str, Transform] = {
    "background": background,
    "lighting": lighting,
    "rotate": rotate,
    "crop": crop,
    "blur": blur,
    "rescale": rescale,
    "jpeg": jpeg,
}
CLEAN = "clean"
RESHOOT = "reshoot"
ALL = "all"
#: Composite perturbations: their transforms, applied in :data:`TRANSFORMS` order.
COMPOSITES: dict[str, tuple[str, ...]] = {
    RESHOOT: ("rotate", "crop", "rescale", "jpeg"),
    ALL: tuple(TRANSFORMS),
}
#: The perturbation subsets: no change, each transform alone, and the composites.
PERTURBATIONS: tuple[str, ...] = (CLEAN, *TRANSFORMS, *COMPOSITES)


def seed_for(seed: int, perturbation: str, key: str) -> np.random.Generator:
    """The RNG of one (perturbation, image) pair: independent of the order images are made in."""
    return np.random.default_rng(
        [seed, zlib.crc32(perturbation.encode()), zlib.crc32(key.encode())]
    )


def perturb(image: Image.Image, perturbation: str, rng: np.random.Generator) -> Image.Image:
    """``image`` under one named perturbation (see :data:`PERTURBATIONS`), as RGB."""
    if perturbation == CLEAN:
        return _rgb(image).copy()
    if perturbation in COMPOSITES:
        for name in COMPOSITES[perturbation]:
            image = TRANSFORMS[name](image, rng)
        return _rgb(image)
    try:
        transform = TRANSFORMS[perturbation]
    except KeyError:
        raise ValueError(
            f"unknown perturbation {perturbation!r}; use one of {', '.join(PERTURBATIONS)}"
        ) from None
    return _rgb(transform(image, rng))


def shopper_photo(image: Image.Image, perturbation: str, key: str, seed: int = 0) -> Image.Image:
    """``image`` under ``perturbation`` with the RNG of ``(seed, perturbation, key)``."""
    return perturb(image, perturbation, seed_for(seed, perturbation, key))


__all__ = [
    "ALL",
    "CLEAN",
    "COMPOSITES",
    "CROP_KEEP",
    "JPEG_QUALITY",
    "MAX_ROTATION",
    "PERTURBATIONS",
    "RESHOOT",
    "TRANSFORMS",
    "background",
    "background_colour",
    "blur",
    "border_background",
    "border_colour",
    "crop",
    "jpeg",
    "lighting",
    "perturb",
    "rescale",
    "rotate",
    "rotation_angle",
    "seed_for",
    "shopper_photo",
]
