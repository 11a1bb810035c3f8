"""The test encoder keeps the encoder contract and its similarity promises."""

from __future__ import annotations

import numpy as np
from fake_encoder import FakeEncoder, register_fake
from PIL import Image

from clipy_qdrant.encoders import Encoder, get_encoder


def _solid(rgb: tuple[int, int, int], size: tuple[int, int] = (60, 80)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def test_contract_shapes_dtype_unit_rows() -> None:
    enc = FakeEncoder()
    assert isinstance(enc, Encoder)
    assert enc.info.name == "fake" and enc.info.dim == 32
    texts = enc.encode_texts(["red shirt", "", "Blue jeans for men"])
    images = enc.encode_images([_solid((200, 0, 0)), _solid((0, 0, 200)).convert("L")])
    for arr, n in ((texts, 3), (images, 2)):
        assert arr.dtype == np.float32 and arr.shape == (n, 32)
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, rtol=1e-5)
    assert enc.encode_images([]).shape == (0, 32)


def test_deterministic_across_instances() -> None:
    a, b = FakeEncoder(), FakeEncoder()
    np.testing.assert_array_equal(a.encode_texts(["navy kurta"]), b.encode_texts(["navy kurta"]))
    img = _solid((10, 120, 30))
    np.testing.assert_array_equal(a.encode_images([img]), b.encode_images([img]))


def test_similar_colours_are_closer_than_different_ones() -> None:
    enc = FakeEncoder()
    red, dark_red, blue = enc.encode_images(
        [_solid((230, 10, 10)), _solid((200, 30, 30)), _solid((10, 10, 230))]
    )
    assert float(red @ dark_red) > float(red @ blue) + 0.3


def test_colour_word_finds_image_of_that_colour() -> None:
    enc = FakeEncoder()
    query = enc.encode_texts(["red"])[0]
    red, blue = enc.encode_images([_solid((220, 20, 20)), _solid((20, 40, 220))])
    assert float(query @ red) > float(query @ blue)


def test_shared_words_make_texts_close() -> None:
    enc = FakeEncoder(dim=64)
    a, b, c = enc.encode_texts(["cotton summer dress", "summer dress", "leather wallet"])
    assert float(a @ b) > float(a @ c)


def test_registered_by_name() -> None:
    register_fake()
    assert get_encoder("fake").info.dim == 32
    assert get_encoder("fake:48").info == FakeEncoder(48).info
