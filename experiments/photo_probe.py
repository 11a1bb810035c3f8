"""Probe test-time levers for shopper-photo queries on one fold, outside the engine.

Gallery: the first ``--limit`` catalog products, encoded by a fashion-mini model (``--model``,
e.g. one trained with ``clipy train CATALOG --limit 5000 --validation-fold 1``). Queries: the
shopper-photo perturbations of :mod:`clipy_qdrant.eval.perturb` applied to ``--n`` products
of fold ``--fold`` (id % 5 == FOLD), written through a JPEG file at quality 95 as
``clipy eval make-queries`` does. Search is exact (numpy) over the whole gallery, scored as
the engine's default image query (weighted fusion, w_text = w_image = 0.5: the query image
vector against product text and image vectors) and as the image vector alone.

Levers (``--levers``):

- ``base``: the encoder as shipped (its own white padding to a square).
- ``fg``: foreground cropping and centring before the backbone and the colour descriptor,
  for gallery and queries alike: the background is the region of the border's median colour
  (within ``FG_TOLERANCE``) connected to the border; it is painted white, the image is
  cropped to the bounding box of the rest (plus a 4 % margin), and the encoder pads it to a
  square as usual. Catalog images (already centred on white) barely change.
- ``whiten``: query images only: the border-connected background painted white as in
  ``fg``, without cropping; the gallery is ``base``'s (the catalog is on white already).
- ``multiview``: query images only: the mean of the vectors of the image, its mirror image
  and its centre crop (85 % of each side), renormalised; the gallery is ``base``'s.
- ``fg+multiview``: both.

    python experiments/photo_probe.py --model /tmp/photo-v1 --fold 1 --limit 5000 --n 200

Prints a table, and writes JSON under ``experiments-out/``. The towers' outputs (head
inputs of gallery and query images, text features) are cached in ``--cache`` per slice,
preprocessing and perturbation; they do not depend on the heads, so another model folder
reuses them and costs only the heads.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from clipy_qdrant.config import Settings
from clipy_qdrant.encoders import get_encoder
from clipy_qdrant.eval.perturb import shopper_photo
from clipy_qdrant.eval.photo_queries import FILE_QUALITY, choose_photo_products

PERTURBATIONS = ("clean", "crop", "rotate", "rescale", "jpeg", "background", "lighting", "all")
FG_TOLERANCE = 28
FG_MARGIN = 0.04
CENTRE_KEEP = 0.85


def foreground(image: Image.Image, crop: bool = True) -> Image.Image:
    """The product cropped to its bounding box on a white background (see the module doc);
    with ``crop=False`` only the background is painted white."""
    from scipy import ndimage

    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    bg = np.median(border, axis=0)
    near = np.abs(rgb - bg[None, None, :]).max(axis=2) <= FG_TOLERANCE
    labels, _ = ndimage.label(near)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, edge[edge > 0])
    product = ~background
    if product.sum() < 0.02 * product.size:
        return image.convert("RGB")
    out = rgb.copy()
    out[background] = 255
    if not crop:
        return Image.fromarray(out.astype(np.uint8), "RGB")
    rows, cols = np.flatnonzero(product.any(axis=1)), np.flatnonzero(product.any(axis=0))
    h, w = product.shape
    my, mx = round(FG_MARGIN * h), round(FG_MARGIN * w)
    top, bottom = max(0, rows[0] - my), min(h, rows[-1] + 1 + my)
    left, right = max(0, cols[0] - mx), min(w, cols[-1] + 1 + mx)
    return Image.fromarray(out[top:bottom, left:right].astype(np.uint8), "RGB")


def centre_crop(image: Image.Image, keep: float = CENTRE_KEEP) -> Image.Image:
    w, h = image.size
    nw, nh = round(w * keep), round(h * keep)
    left, top = (w - nw) // 2, (h - nh) // 2
    return image.crop((left, top, left + nw, top + nh))


def as_file(image: Image.Image) -> Image.Image:
    """The image after being written as a query file (JPEG, quality 95)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=FILE_QUALITY)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def metrics(
    scores: np.ndarray,
    qids: Sequence[str],
    gallery: Sequence[str],
    payloads: dict[str, dict[str, Any]],
    pairs: Counter[tuple[str, str]],
) -> dict[str, float]:
    """Known-item hit@1 / hit@10 / MRR@10 (ties counted against the query), type and
    type+colour P@10 with the query product excluded."""
    index = {pid: i for i, pid in enumerate(gallery)}
    hit1, hit10, mrr, p_type, p_tc = [], [], [], [], []
    for row, pid in zip(scores, qids, strict=True):
        own = row[index[pid]]
        rank = int((row >= own).sum())  # ties with others count as ranked after them
        hit1.append(rank <= 1)
        hit10.append(rank <= 10)
        mrr.append(1.0 / rank if rank <= 10 else 0.0)
        others = row.copy()
        others[index[pid]] = -np.inf
        top = np.argpartition(-others, 10)[:10]
        article, colour = payloads[pid]["articleType"], payloads[pid]["baseColour"]
        p_type.append(np.mean([payloads[gallery[j]]["articleType"] == article for j in top]))
        if colour and pairs[(article, colour)] > 1:
            p_tc.append(
                np.mean(
                    [
                        payloads[gallery[j]]["articleType"] == article
                        and payloads[gallery[j]]["baseColour"] == colour
                        for j in top
                    ]
                )
            )
    return {
        "hit@1": float(np.mean(hit1)),
        "hit@10": float(np.mean(hit10)),
        "MRR": float(np.mean(mrr)),
        "type P@10": float(np.mean(p_type)),
        "type+colour P@10": float(np.mean(p_tc)) if p_tc else float("nan"),
    }


@dataclass
class FoldQueries:
    """The probe's gallery (the first products with an image) and its fold's query products."""

    gallery: list[str]
    by_id: dict[str, Any]
    payloads: dict[str, dict[str, Any]]
    pairs: Counter[tuple[str, str]]
    qids: list[str]
    images: dict[str, Image.Image]


def fold_queries(catalog: str, limit: int, n: int, seed: int, fold: int) -> FoldQueries:
    """Gallery = the first ``limit`` catalog products with an image; queries = ``n`` products
    of fold ``fold`` (id % 5 == fold) among them, chosen as ``clipy eval`` chooses photo
    products (:func:`choose_photo_products` with the fold as its ``heldout`` predicate)."""
    from ingest.readers import open_catalog

    products = list(open_catalog(catalog, limit=limit))
    gallery = [p.product_id for p in products if p.has_image and not p.error]
    by_id = {p.product_id: p for p in products}
    payloads = {
        pid: {
            "product_id": pid,
            "articleType": str(by_id[pid].metadata.get("articleType") or ""),
            "baseColour": str(by_id[pid].metadata.get("baseColour") or ""),
        }
        for pid in gallery
    }
    pairs = Counter((p["articleType"], p["baseColour"]) for p in payloads.values())
    chosen = choose_photo_products(
        list(payloads.values()), n=n, seed=seed, heldout=lambda pid: int(pid) % 5 == fold
    )
    qids = [str(p["product_id"]) for p in chosen]
    assert all(int(pid) % 5 == fold for pid in qids)
    print(f"gallery {len(gallery)} products, {len(qids)} fold-{fold} queries", file=sys.stderr)
    images = {pid: by_id[pid].load_image() for pid in gallery}
    return FoldQueries(gallery, by_id, payloads, pairs, qids, images)


def npy_cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, saved at ``path`` and read back from there by later runs."""
    if path.is_file():
        return np.load(path)
    t0 = time.perf_counter()
    value = compute()
    np.save(path, value)
    print(f"{path.stem}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return value


def write_report(path: Path, record: dict[str, Any]) -> None:
    """``record`` as indented JSON at ``path`` (its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=str(Settings().catalog))
    parser.add_argument("--model", required=True, help="fashion-mini model folder")
    parser.add_argument("--fold", type=int, default=1, help="queries about id %% 5 == FOLD")
    parser.add_argument("--limit", type=int, default=5000, help="gallery: first N products")
    parser.add_argument("--n", type=int, default=200, help="query products")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levers", default="base,fg,multiview,fg+multiview")
    parser.add_argument("--perturbations", default=",".join(PERTURBATIONS))
    parser.add_argument("--cache", default="experiments-out/photo-cache")
    parser.add_argument("--out", default="experiments-out/photo_probe.json")
    parser.add_argument("--no-timing", action="store_true", help="skip the latency probe")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    encoder = get_encoder(f"fashion-mini:{Path(args.model).resolve()}")
    fq = fold_queries(args.catalog, args.limit, args.n, args.seed, args.fold)
    gallery, by_id, payloads, pairs = fq.gallery, fq.by_id, fq.payloads, fq.pairs
    qids, images = fq.qids, fq.images

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    def cached(name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Tower outputs (model-independent head inputs), cached by name."""
        return npy_cached(cache / f"{args.limit}-{name}.npy", compute)

    gallery_texts = [by_id[pid].text for pid in gallery]
    text_feats = cached("text", lambda: encoder.text_tower.features(gallery_texts))
    texts = encoder.heads.text_vectors(text_feats, gallery_texts)
    prep: dict[str, Callable[[Image.Image], Image.Image]] = {
        "base": lambda im: im,
        "fg": foreground,
        "whiten": lambda im: foreground(im, crop=False),
    }
    views: dict[str, Callable[[Image.Image], Image.Image]] = {
        "mirror": ImageOps.mirror,
        "centre": centre_crop,
    }
    levers = [lv for lv in args.levers.split(",") if lv]
    perturbations = [p for p in args.perturbations.split(",") if p]
    results: dict[str, Any] = {}
    timing: dict[str, float] = {}
    suffix = f"{args.fold}-{args.n}-{args.seed}"
    for lever in levers:
        pre = lever.split("+")[0] if lever.split("+")[0] in prep else "base"
        multiview = lever.endswith("multiview")
        fn = prep[pre]
        # Whitening is for queries only: the catalog's images are already on white.
        gal_pre = "base" if pre == "whiten" else pre
        gal_inputs = cached(
            f"image-{gal_pre}",
            lambda fn=prep[gal_pre]: encoder.image_inputs([fn(images[p]) for p in gallery]),
        )
        gal = encoder.heads.image_vectors(gal_inputs)
        results[lever] = {}
        for perturbation in perturbations:
            photos = [
                fn(as_file(shopper_photo(images[pid], perturbation, pid, args.seed)))
                for pid in qids
            ]
            inputs = cached(
                f"q-{pre}-{perturbation}-{suffix}",
                lambda photos=photos: encoder.image_inputs(photos),
            )
            q = encoder.heads.image_vectors(inputs)
            if multiview:
                stack = [q]
                for view, vfn in views.items():
                    view_inputs = cached(
                        f"q-{pre}-{view}-{perturbation}-{suffix}",
                        lambda photos=photos, vfn=vfn: encoder.image_inputs(
                            [vfn(im) for im in photos]
                        ),
                    )
                    stack.append(encoder.heads.image_vectors(view_inputs))
                q = unit(np.mean(stack, axis=0))
            fused = 0.5 * q @ texts.T + 0.5 * q @ gal.T
            image_only = q @ gal.T
            results[lever][perturbation] = {
                "default (w_image 0.5)": metrics(fused, qids, gallery, payloads, pairs),
                "image vector only": metrics(image_only, qids, gallery, payloads, pairs),
            }
        if args.no_timing:
            continue
        # Query cost: one image, single-query latency (median of 15, after a warm-up).
        probe = as_file(shopper_photo(images[qids[0]], "all", qids[0], args.seed))

        def one(probe: Image.Image = probe, fn: Any = fn, multiview: bool = multiview) -> None:
            v = fn(probe)
            batch = [v, ImageOps.mirror(v), centre_crop(v)] if multiview else [v]
            vectors = encoder.encode_images(batch)
            if multiview:
                unit(vectors.mean(axis=0, keepdims=True))

        one()
        runs = []
        for _ in range(15):
            t0 = time.perf_counter()
            one()
            runs.append(time.perf_counter() - t0)
        timing[lever] = float(np.median(runs) * 1000)

    header = ["lever", "perturbation", "setting", "hit@1", "hit@10", "MRR", "type P@10", "t+c P@10"]
    print("\t".join(header))
    for lever, per in results.items():
        for perturbation, settings in per.items():
            for setting, m in settings.items():
                print("\t".join([lever, perturbation, setting, *(f"{v:.3f}" for v in m.values())]))
    print("query encoding ms (median, one image):", json.dumps(timing))
    out = Path(args.out)
    write_report(
        out,
        {
            "model": args.model,
            "fold": args.fold,
            "gallery": len(gallery),
            "queries": len(qids),
            "seed": args.seed,
            "results": results,
            "query_ms": timing,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
