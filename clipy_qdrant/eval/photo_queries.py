"""Shopper-photo query sets: held-out product images perturbed as a shopper's photo would be.

A shopper who looks for a product by its picture sends a photo or a screenshot, not the
catalog's packshot. :func:`photo_queries` takes held-out products' catalog images, applies
each perturbation of :mod:`clipy_qdrant.eval.perturb` (``clean``, every single transform,
``all`` together), writes the results as real JPEG files beside the query file
(``<out_dir>/<perturbation>/<product id>.jpg``, quality :data:`FILE_QUALITY`, so the
``jpeg`` subset is the only strong compression) and asks, for each image:

- ``photo/<perturbation>/known-item``: find the product itself (relevant: its id; report
  hit@1 = ``hit_rate@1``, hit@10 = ``hit_rate@10``, MRR = ``mrr@10``);
- ``photo/<perturbation>/articleType``: other products of its articleType (the product itself
  is excluded; report ``precision@10``);
- ``photo/<perturbation>/articleType+colour``: other products of its articleType and colour,
  where at least ``min_relevant`` such products exist.

Every query searches the whole catalog (``gallery: "all"``): a shopper's photo is matched
against everything on sale. The products asked about are the held-out ones (``heldout``
predicate, default :func:`clipy_qdrant.split.is_heldout`), so the image head has never seen
them. The same payloads, images and seed give the same queries and the same pixels.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from clipy_qdrant.errors import InputError
from clipy_qdrant.eval.catalog_queries import HeldoutRule, _clean, _pid, _pool
from clipy_qdrant.eval.perturb import PERTURBATIONS, shopper_photo
from clipy_qdrant.eval.queries import EvalQuery

PHOTO = "photo"
#: Query forms asked of every perturbed image (the last part of the set name).
PHOTO_FORMS: tuple[str, ...] = ("known-item", "articleType", "articleType+colour")
#: JPEG quality the perturbed images are written with (the ``jpeg`` transform compresses
#: harder, at :data:`clipy_qdrant.eval.perturb.JPEG_QUALITY`, before this).
FILE_QUALITY = 95

#: Loads the catalog images of the given product ids (ids without an image may be missing).
ImageLoader = Callable[[Collection[str]], Mapping[str, Image.Image]]


def photo_set(perturbation: str, form: str) -> str:
    """The set name of one perturbation and query form: ``photo/crop/known-item``."""
    return f"{PHOTO}/{perturbation}/{form}"


def choose_photo_products(
    products: Sequence[Mapping[str, Any]],
    *,
    n: int = 500,
    seed: int = 0,
    heldout: HeldoutRule | None = None,
) -> list[Mapping[str, Any]]:
    """``n`` held-out products with an articleType shared by another catalog product, in id
    order (a seeded sample)."""
    types = Counter(_clean(p.get("articleType")) for p in products)
    pool = [
        p
        for p in _pool(products, True, heldout)
        if _clean(p.get("articleType")) and types[_clean(p.get("articleType"))] > 1
    ]
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    return sorted(chosen, key=lambda p: (len(_pid(p)), _pid(p)))


def photo_queries(
    products: Sequence[Mapping[str, Any]],
    load_images: ImageLoader,
    out_dir: str | Path,
    *,
    n: int = 500,
    seed: int = 0,
    min_relevant: int = 1,
    heldout: HeldoutRule | None = None,
    perturbations: Sequence[str] = PERTURBATIONS,
) -> list[EvalQuery]:
    """Write the perturbed images of ``n`` held-out products under ``out_dir`` and return
    their queries (image paths relative to ``out_dir``, where the query file goes).

    ``load_images`` gets the chosen ids and returns their catalog images; a product it
    returns no image for is left out. Raises :class:`InputError` when no chosen product has
    an image.
    """
    unknown = [p for p in perturbations if p not in PERTURBATIONS]
    if unknown:
        raise InputError(
            f"unknown perturbation(s) {', '.join(unknown)}; use {', '.join(PERTURBATIONS)}"
        )
    out_dir = Path(out_dir)
    chosen = choose_photo_products(products, n=n, seed=seed, heldout=heldout)
    images = load_images({_pid(p) for p in chosen})
    chosen = [p for p in chosen if _pid(p) in images]
    if not chosen:
        raise InputError("none of the chosen held-out products has a catalog image")
    pairs = Counter((_clean(p.get("articleType")), _clean(p.get("baseColour"))) for p in products)
    out: list[EvalQuery] = []
    for perturbation in perturbations:
        folder = out_dir / perturbation
        folder.mkdir(parents=True, exist_ok=True)
        for p in chosen:
            pid = _pid(p)
            article, colour = _clean(p.get("articleType")), _clean(p.get("baseColour"))
            photo = shopper_photo(images[pid], perturbation, pid, seed)
            name = f"{pid}.jpg"
            photo.save(folder / name, format="JPEG", quality=FILE_QUALITY)
            image = f"{perturbation}/{name}"
            out.append(
                EvalQuery(
                    id=f"photo-{perturbation}-ki-{pid}",
                    set=photo_set(perturbation, "known-item"),
                    image=image,
                    relevant_ids=(pid,),
                    gallery="all",
                )
            )
            out.append(
                EvalQuery(
                    id=f"photo-{perturbation}-t-{pid}",
                    set=photo_set(perturbation, "articleType"),
                    image=image,
                    exclude=(pid,),
                    relevant_rule={"articleType": [article]},
                    gallery="all",
                )
            )
            if colour and pairs[(article, colour)] > min_relevant:
                out.append(
                    EvalQuery(
                        id=f"photo-{perturbation}-tc-{pid}",
                        set=photo_set(perturbation, "articleType+colour"),
                        image=image,
                        exclude=(pid,),
                        relevant_rule={"articleType": [article], "baseColour": [colour]},
                        gallery="all",
                    )
                )
    return out


__all__ = [
    "FILE_QUALITY",
    "PHOTO",
    "PHOTO_FORMS",
    "ImageLoader",
    "choose_photo_products",
    "photo_queries",
    "photo_set",
]
