"""Shopper-photo views of training images: the product's captions and labels, a seeded
crop + rotation + JPEG of its image, and ids that key the feature cache apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from clipy_qdrant.training.photo_views import VIEW_VERSION, photo_views


@dataclass
class Item:
    product_id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        img = Image.new("RGB", (60, 80), (255, 255, 255))
        ImageDraw.Draw(img).rectangle((12, 10, 47, 69), fill=(30, 60, 200))
        return img


def test_views_carry_the_products_text_and_labels_under_their_own_ids() -> None:
    items = [Item("7", "Blue Shirt", {"articleType": "Shirts"}), Item("8", "Red Shoe")]
    views = photo_views(items, 2, seed=3)
    assert [v.source.product_id for v in views] == ["7", "7", "8", "8"]
    assert views[0].text == "Blue Shirt" and views[0].metadata == {"articleType": "Shirts"}
    ids = [v.product_id for v in views]
    assert len(set(ids)) == 4 and not {"7", "8"} & set(ids)
    assert ids[0] == f"7~photo0s3v{VIEW_VERSION}"
    assert photo_views(items, 0, seed=3) == []


def test_a_view_is_a_seeded_crop_of_the_image() -> None:
    item = Item("7", "Blue Shirt")
    a, b = photo_views([item], 2, seed=0)
    first = np.asarray(a.load_image())
    assert np.array_equal(first, np.asarray(photo_views([item], 1, seed=0)[0].load_image()))
    assert not np.array_equal(first, np.asarray(b.load_image()))  # another view, other pixels
    h, w = first.shape[:2]
    assert 0.80 * 80 - 1 <= h <= 0.92 * 80 + 1 and 0.80 * 60 - 1 <= w <= 0.92 * 60 + 1
    other_seed = np.asarray(photo_views([item], 1, seed=1)[0].load_image())
    assert first.shape != other_seed.shape or not np.array_equal(first, other_seed)
