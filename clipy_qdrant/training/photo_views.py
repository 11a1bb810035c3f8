"""Shopper-photo views of training images: extra training rows that teach the image heads to
map a cropped, rotated, recompressed photo of a product where its packshot goes.

Each view is a :class:`~clipy_qdrant.training.products.ProductLike` with the product's text
and metadata (so its captions and labels) and an image made by the crop, rotation and JPEG
transforms of :mod:`clipy_qdrant.eval.perturb`, seeded per product and view. Its id,
``<product id>~photo<k>s<seed>v<VIEW_VERSION>``, keys the tower-feature cache, so a view's
features are computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from clipy_qdrant.eval.perturb import crop, jpeg, rotate, seed_for
from clipy_qdrant.training.products import ProductLike

#: Changes whenever the transforms of a view change, so cached features are not reused.
VIEW_VERSION = 1


@dataclass
class PhotoView:
    """One augmented view of a training product's image (the product's text and metadata)."""

    product_id: str
    text: str
    metadata: dict[str, Any]
    source: ProductLike
    view: int
    seed: int

    @classmethod
    def of(cls, source: ProductLike, view: int, seed: int) -> PhotoView:
        pid = f"{source.product_id}~photo{view}s{seed}v{VIEW_VERSION}"
        return cls(pid, source.text, source.metadata, source, view, seed)

    def load_image(self) -> Image.Image:
        rng = seed_for(self.seed, f"train-view-{self.view}", str(self.source.product_id))
        image = self.source.load_image()
        return jpeg(crop(rotate(image, rng), rng), rng)


def photo_views(products: Sequence[ProductLike], views: int, seed: int) -> list[PhotoView]:
    """``views`` augmented views of each product, product by product."""
    return [PhotoView.of(p, k, seed) for p in products for k in range(views)]


__all__ = ["VIEW_VERSION", "PhotoView", "photo_views"]
