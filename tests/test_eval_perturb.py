"""Shopper-photo perturbations: each transform does what it says, and a seed fixes the pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clipy_qdrant.eval import perturb as P


def packshot(width: int = 60, height: int = 80) -> Image.Image:
    """A catalog-like image: a red garment with a white collar inside it, on white."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((12, 10, 47, 69), fill=(200, 30, 40))
    draw.rectangle((24, 14, 35, 22), fill=(250, 250, 250))  # white, but not touching the border
    return img


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("name", P.PERTURBATIONS)
def test_same_seed_same_pixels_other_seed_other_pixels(name: str) -> None:
    img = packshot()
    a = P.shopper_photo(img, name, "15970", seed=3)
    b = P.shopper_photo(img, name, "15970", seed=3)
    assert a.mode == "RGB" and np.array_equal(pixels(a), pixels(b))
    if name not in (P.CLEAN, "jpeg"):  # the only transforms with no random part
        others = [P.shopper_photo(img, name, "15970", seed=s) for s in (4, 5, 6)]
        assert any(o.size != a.size or not np.array_equal(pixels(o), pixels(a)) for o in others)


def test_each_image_has_its_own_stream_whatever_the_order() -> None:
    rng_a = P.seed_for(0, "crop", "1")
    rng_b = P.seed_for(0, "crop", "2")
    assert rng_a.uniform() != rng_b.uniform()
    assert P.seed_for(0, "crop", "1").uniform() == P.seed_for(0, "crop", "1").uniform()
    assert P.seed_for(0, "crop", "1").uniform() != P.seed_for(0, "rotate", "1").uniform()


def test_clean_leaves_the_image_alone() -> None:
    img = packshot()
    assert np.array_equal(pixels(P.shopper_photo(img, P.CLEAN, "1")), pixels(img))


def test_crop_keeps_80_to_92_percent_of_each_side_and_is_a_window_of_the_image() -> None:
    img = packshot()
    source = pixels(img)
    for seed in range(200):
        out = P.crop(img, np.random.default_rng(seed))
        w, h = out.size
        assert 0.80 * 60 - 0.5 <= w <= 0.92 * 60 + 0.5
        assert 0.80 * 80 - 0.5 <= h <= 0.92 * 80 + 0.5
        window = pixels(out)
        found = any(
            np.array_equal(source[top : top + h, left : left + w], window)
            for top in range(80 - h + 1)
            for left in range(60 - w + 1)
        )
        assert found


def test_rotation_stays_within_eight_degrees_and_keeps_the_size() -> None:
    angles = [P.rotation_angle(np.random.default_rng(s)) for s in range(500)]
    assert max(abs(a) for a in angles) <= P.MAX_ROTATION
    assert max(angles) > 6 and min(angles) < -6  # the whole range is used
    img = packshot()
    out = P.rotate(img, np.random.default_rng(1))
    assert out.size == img.size
    assert not np.array_equal(pixels(out), pixels(img))
    # On a catalog image the corners a rotation uncovers are the background's white.
    assert pixels(out)[0, 0].min() >= 250 and pixels(out)[-1, -1].min() >= 250


def test_rotation_matches_pil_rotation_by_the_drawn_angle() -> None:
    img = packshot()
    angle = P.rotation_angle(np.random.default_rng(7))
    expected = img.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    assert np.array_equal(pixels(P.rotate(img, np.random.default_rng(7))), pixels(expected))


def test_rescale_changes_both_sides_by_one_factor_within_bounds() -> None:
    img = packshot()
    sizes = [P.rescale(img, np.random.default_rng(s)).size for s in range(100)]
    factors = [w / 60 for w, _ in sizes]
    assert all(P.RESCALE[0] - 0.02 <= f <= P.RESCALE[1] + 0.02 for f in factors)
    assert all(abs(w / 60 - h / 80) < 0.03 for w, h in sizes)
    assert min(factors) < 0.8 and max(factors) > 1.3


def test_jpeg_applies_the_quality() -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8), "RGB")
    out = P.jpeg(noisy)
    buffer = io.BytesIO()
    noisy.save(buffer, format="JPEG", quality=P.JPEG_QUALITY)
    with Image.open(io.BytesIO(buffer.getvalue())) as expected:
        assert np.array_equal(pixels(out), pixels(expected))
    for other in (50, 60, 95):  # not some other quality
        buffer = io.BytesIO()
        noisy.save(buffer, format="JPEG", quality=other)
        with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
            assert not np.array_equal(pixels(out), pixels(decoded))


def test_background_is_non_white_where_the_catalog_was_white_and_the_product_is_kept() -> None:
    img = packshot()
    before = pixels(img)
    for seed in range(20):
        after = pixels(P.background(img, np.random.default_rng(seed)))
        was_background = P.border_background(before.astype(np.uint8))
        assert was_background[0, 0] and not was_background[40, 30]
        assert (after[was_background].min(axis=1) < P.WHITE_LEVEL).all()  # no white left
        assert (after[was_background] <= P.BACKGROUND_LEVELS[1] + 6).all()
        # The garment and its white collar (inside, not touching the border) are unchanged.
        assert np.array_equal(after[~was_background], before[~was_background])
        assert after[18, 30].min() >= 250


def test_border_background_follows_white_only_from_the_border() -> None:
    rgb = np.full((5, 5, 3), 255, dtype=np.uint8)
    rgb[1:4, 1:4] = (0, 0, 0)
    rgb[2, 2] = (255, 255, 255)  # a white pixel enclosed by the product
    mask = P.border_background(rgb)
    assert mask[0].all() and mask[:, 0].all()
    assert not mask[2, 2] and not mask[1:4, 1:4].any()


def test_lighting_shifts_brightness_and_white_balance_within_bounds() -> None:
    grey = Image.new("RGB", (20, 20), (128, 128, 128))
    for seed in range(50):
        out = pixels(P.lighting(grey, np.random.default_rng(seed)))[0, 0]
        # brightness 0.8..1.2, contrast leaves a flat image as it is, gains 0.9..1.1
        assert (out >= 128 * 0.8 * 0.9 - 1).all() and (out <= 128 * 1.2 * 1.1 + 1).all()
    outs = {tuple(pixels(P.lighting(grey, np.random.default_rng(s)))[0, 0]) for s in range(5)}
    assert len(outs) == 5
    assert any(len(set(o)) > 1 for o in outs)  # channels move apart: a colour cast


def test_blur_smooths_edges() -> None:
    img = packshot()
    out = pixels(P.blur(img, np.random.default_rng(0)))
    edge = np.abs(np.diff(pixels(img)[40, :, 0])).max()
    assert np.abs(np.diff(out[40, :, 0])).max() < edge
    assert out.shape == pixels(img).shape


def test_all_applies_every_transform() -> None:
    img = packshot()
    out = P.shopper_photo(img, P.ALL, "1")
    assert out.size != img.size  # cropped and rescaled
    corner = pixels(out)[0, 0]
    assert corner.min() < P.WHITE_LEVEL  # not on white any more


def test_reshoot_is_rotation_crop_rescale_and_jpeg_in_that_order() -> None:
    img = packshot()
    rng = P.seed_for(0, P.RESHOOT, "1")
    expected = P.jpeg(P.rescale(P.crop(P.rotate(img, rng), rng), rng))
    out = P.shopper_photo(img, P.RESHOOT, "1")
    assert np.array_equal(pixels(out), pixels(expected))
    assert P.COMPOSITES[P.ALL] == tuple(P.TRANSFORMS)


def test_unknown_perturbation_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown perturbation 'sepia'"):
        P.perturb(packshot(), "sepia", np.random.default_rng(0))
