"""Probe a raw-backbone block in the image vector for shopper-photo known-item search, on one fold.

The image vector becomes ``unit([sqrt(1 - λ)·h ; sqrt(λ)·r])``: ``h`` the trained heads' unit
image vector (``--model``, a fashion-mini model folder trained with ``--validation-fold
FOLD``), ``r`` a unit block of the image tower's raw pooled features (the head inputs'
backbone columns). Both parts are unit rows, so image→image cosine is ``(1 - λ)·cos(h) +
λ·cos(r)``; a text vector padded with zeros, ``[t ; 0]``, meets it at ``sqrt(1 - λ)·cos``,
a uniform scale that leaves text→image rankings as they are.

Blocks (``r``), all fitted on the **training-fold gallery products only** (gallery ids whose
id % 5 is neither 0, the held-out split, nor ``--fold``):

- ``raw``: the pooled features, L2-normalised (all 3,184 columns; the backbone probe's
  vector);
- ``std``: each column standardised by the training products' mean and std, L2-normalised;
- ``pca-D``: the L2-normalised features centred on the training products' mean and
  projected on their first ``D`` principal axes, L2-normalised;
- ``pcaw-D``: the same, whitened (each axis divided by its standard deviation).

Gallery: the first ``--limit`` catalog products with an image (held-out products stay in it
as distractors, as in ``photo_probe.py``; none is a query and none is fitted on). Queries:
``--n`` products of fold ``--fold`` (id % 5 == FOLD) under each perturbation of
:mod:`clipy_qdrant.eval.perturb`, written through a JPEG file at quality 95, as
``photo_probe.py`` and ``backbone_probe.py`` choose and make them. Search is exact (numpy),
with three scorings:

- ``image vector only``: the blended query image vector against the blended gallery;
- ``default (w_image 0.5)``: the engine's default image query (weighted fusion, w_text =
  w_image = 0.5) whose text side stays ``h`` against the product text vectors: only the
  image channel changes;
- ``default, one query vector``: the blended query vector against zero-padded product text
  vectors, i.e. the text side scaled by ``sqrt(1 - λ)``, as an engine that sends one vector
  to both channels computes it.

Metrics: ``photo_probe.metrics`` (known-item hit@1 / hit@10 / MRR@10, type and type +
colour P@10). For the best settings of each scoring (the ``--best`` highest mean hit@1 over
the perturbations among those whose mean type and type + colour P@10 are at most
``--max-loss`` below λ = 0's, and the two highest overall), the probe pairs each query with
λ = 0: queries that gain / lose rank 1 with a two-sided sign test, and the mean paired
change of type and type + colour P@10 with its standard error.

    python experiments/blend_probe.py --model /tmp/photo-v1 --fold 1 --limit 3000 --n 200 \\
        --cache /tmp/blend-cache

A second draw (a 5,000-product gallery, blocks fitted on its 3,008 training-fold products,
query seed 1) checks the chosen settings on other queries:

    python experiments/blend_probe.py --model /tmp/photo-v1 --fold 1 --limit 5000 --n 200 \\
        --seed 1 --blocks raw,std,pcaw-128,pcaw-256,pcaw-512 --cache /tmp/blend-cache \\
        --out experiments-out/blend_probe_5000_seed1.json

Head inputs (backbone features and colour descriptor of gallery and query images) and text
features are cached in ``--cache`` under ``photo_probe.py``'s names, so either probe reuses
the other's cache. Prints tables, writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from clipy_qdrant.config import Settings
from clipy_qdrant.encoders import get_encoder
from clipy_qdrant.encoders.fashion import FashionEncoder
from clipy_qdrant.eval.perturb import shopper_photo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_probe import as_file, fold_queries, metrics, npy_cached, unit, write_report

PERTURBATIONS = ("clean", "crop", "jpeg", "lighting", "background", "reshoot")
LAMBDAS = "0,0.2,0.35,0.5,0.65,0.8,1"
BLOCKS = "raw,std,pca-64,pca-128,pca-256,pcaw-64,pcaw-128,pcaw-256,pcaw-512"
SETTINGS = ("image vector only", "default (w_image 0.5)", "default, one query vector")


def fit_block(name: str, train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The map from raw backbone features to the unit block ``name``, fitted on ``train``
    (raw features of training-fold products)."""
    if name == "raw":
        return unit
    if name == "std":
        mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
        return lambda x: unit((x - mean) / std)
    kind, _, dims = name.partition("-")
    if kind not in ("pca", "pcaw") or not dims.isdigit():
        raise ValueError(f"unknown block {name!r}: raw, std, pca-D or pcaw-D")
    d = int(dims)
    base = unit(train)
    centre = base.mean(axis=0)
    _, sv, vt = np.linalg.svd(base - centre, full_matrices=False)
    axes = vt[:d].T
    scale = sv[:d] / np.sqrt(len(base) - 1) if kind == "pcaw" else np.ones(d)
    return lambda x: unit(((unit(x) - centre) @ axes) / scale)


def per_query(
    scores: np.ndarray, qids: list[str], gallery: list[str], payloads: Any, pairs: Any
) -> dict[str, np.ndarray]:
    """``metrics`` of each query alone (NaN where type + colour does not apply)."""
    rows = [
        metrics(scores[i : i + 1], qids[i : i + 1], gallery, payloads, pairs)
        for i in range(len(qids))
    ]
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


def pooled(per: dict[str, np.ndarray]) -> dict[str, float]:
    """``metrics`` over all queries from the per-query ones (type + colour over the queries
    where it applies)."""
    out = {key: float(np.mean(values)) for key, values in per.items()}
    tc = per["type+colour P@10"]
    tc = tc[~np.isnan(tc)]
    out["type+colour P@10"] = float(tc.mean()) if len(tc) else float("nan")
    return out


def paired(base: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> dict[str, float]:
    """Rank-1 gains / losses against ``base`` with the sign test's p, and the mean paired
    change of type and type + colour P@10 with its standard error."""
    gained = int(((new["hit@1"] == 1) & (base["hit@1"] == 0)).sum())
    lost = int(((new["hit@1"] == 0) & (base["hit@1"] == 1)).sum())
    p = binomtest(gained, gained + lost).pvalue if gained + lost else 1.0
    out: dict[str, float] = {"gained": gained, "lost": lost, "sign p": float(p)}
    for key in ("type P@10", "type+colour P@10"):
        diff = new[key] - base[key]
        diff = diff[~np.isnan(diff)]
        out[f"Δ {key}"] = float(diff.mean())
        out[f"se {key}"] = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=str(Settings().catalog))
    parser.add_argument("--model", required=True, help="fashion-mini model folder")
    parser.add_argument("--fold", type=int, default=1, help="queries about id %% 5 == FOLD")
    parser.add_argument("--limit", type=int, default=3000, help="gallery: first N products")
    parser.add_argument("--n", type=int, default=200, help="query products")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lambdas", default=LAMBDAS, help="weights of the raw block")
    parser.add_argument("--blocks", default=BLOCKS)
    parser.add_argument("--perturbations", default=",".join(PERTURBATIONS))
    parser.add_argument("--best", type=int, default=4, help="settings paired with λ = 0")
    parser.add_argument(
        "--max-loss",
        type=float,
        default=0.015,
        help="paired settings: mean type and type + colour P@10 at most this below λ = 0",
    )
    parser.add_argument("--cache", default="experiments-out/photo-cache")
    parser.add_argument("--out", default="experiments-out/blend_probe.json")
    args = parser.parse_args(argv)
    if args.fold == 0:
        parser.error("fold 0 is the held-out split; probe a validation fold (1-4)")

    started = time.perf_counter()
    encoder = get_encoder(f"fashion-mini:{Path(args.model).resolve()}")
    assert isinstance(encoder, FashionEncoder)
    fq = fold_queries(args.catalog, args.limit, args.n, args.seed, args.fold)
    gallery, by_id, payloads, pairs, qids = fq.gallery, fq.by_id, fq.payloads, fq.pairs, fq.qids
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    def cached(name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        return npy_cached(cache / f"{args.limit}-{name}.npy", compute)

    gallery_texts = [by_id[pid].text for pid in gallery]
    texts = encoder.heads.text_vectors(
        cached("text", lambda: encoder.text_tower.features(gallery_texts)), gallery_texts
    )
    gal_inputs = cached("image-base", lambda: encoder.image_inputs([fq.images[p] for p in gallery]))
    width = encoder.image_tower.feature_dim
    gal_h = encoder.heads.image_vectors(gal_inputs)
    assert np.allclose(np.linalg.norm(gal_h, axis=1), 1.0, atol=1e-3)
    gal_raw = gal_inputs[:, :width]
    fit_rows = [i for i, pid in enumerate(gallery) if int(pid) % 5 not in (0, args.fold)]
    print(f"blocks fitted on {len(fit_rows)} training-fold gallery products", file=sys.stderr)
    blocks = {name: fit_block(name, gal_raw[fit_rows]) for name in args.blocks.split(",")}
    gal_r = {name: fn(gal_raw) for name, fn in blocks.items()}
    lambdas = [float(x) for x in args.lambdas.split(",")]
    perturbations = [p for p in args.perturbations.split(",") if p]

    # results[setting][block][λ][perturbation] = metrics, the means of the per-query metrics
    # kept for pairing (a full-catalog gallery makes every score matrix ~50 MB, too many to
    # keep).
    results: dict[str, dict[str, dict[str, dict[str, dict[str, float]]]]] = {
        s: {b: {} for b in blocks} for s in SETTINGS
    }
    per_query_of: dict[tuple[str, str, float, str], dict[str, np.ndarray]] = {}
    suffix = f"{args.fold}-{args.n}-{args.seed}"
    for perturbation in perturbations:

        def photos(p: str = perturbation) -> np.ndarray:
            return encoder.image_inputs(
                [as_file(shopper_photo(fq.images[pid], p, pid, args.seed)) for pid in qids]
            )

        inputs = cached(f"q-base-{perturbation}-{suffix}", photos)
        q_h = encoder.heads.image_vectors(inputs)
        text_side = q_h @ texts.T
        image_h = q_h @ gal_h.T
        for name, fn in blocks.items():
            image_r = fn(inputs[:, :width]) @ gal_r[name].T
            for lam in lambdas:
                image = (1 - lam) * image_h + lam * image_r
                fused = 0.5 * text_side + 0.5 * image
                one_vector = 0.5 * np.sqrt(1 - lam) * text_side + 0.5 * image
                for setting, scores in zip(SETTINGS, (image, fused, one_vector), strict=True):
                    per = per_query(scores, qids, gallery, payloads, pairs)
                    per_query_of[(setting, name, lam, perturbation)] = per
                    results[setting][name].setdefault(str(lam), {})[perturbation] = pooled(per)

    def mean_of(setting: str, name: str, lam: float, key: str) -> float:
        per = results[setting][name][str(lam)]
        return float(np.mean([per[p][key] for p in perturbations]))

    keys = ["hit@1", "hit@10", "MRR", "type P@10", "type+colour P@10"]
    print("\nmeans over " + ",".join(perturbations))
    print("\t".join(["setting", "block", "λ", *keys, "reshoot@1", "background@1"]))
    for setting in SETTINGS:
        for name in blocks:
            for lam in lambdas:
                per = results[setting][name][str(lam)]
                extra = [f"{per[p]['hit@1']:.3f}" for p in ("reshoot", "background") if p in per]
                means = [f"{mean_of(setting, name, lam, k):.3f}" for k in keys]
                print("\t".join([setting, name, str(lam), *means, *extra]))

    first = next(iter(blocks))
    pairing: dict[str, Any] = {}
    for setting in SETTINGS:

        def by_hit1(nl: tuple[str, float], s: str = setting) -> float:
            return -mean_of(s, nl[0], nl[1], "hit@1")

        ranked = sorted(((n, lam) for n in blocks for lam in lambdas if lam > 0), key=by_hit1)
        kept = [
            (n, lam)
            for n, lam in ranked
            if all(
                mean_of(setting, n, lam, k) >= mean_of(setting, first, 0.0, k) - args.max_loss
                for k in ("type P@10", "type+colour P@10")
            )
        ]
        chosen = kept[: args.best] + [nl for nl in ranked[:2] if nl not in kept[: args.best]]
        pairing[setting] = {}
        for name, lam in chosen:
            label = f"{name} λ={lam}"
            pairing[setting][label] = {}
            for perturbation in perturbations:
                base = per_query_of[(setting, first, 0.0, perturbation)]
                new = per_query_of[(setting, name, lam, perturbation)]
                pairing[setting][label][perturbation] = paired(base, new)
    print("\npaired against λ = 0: gained / lost rank 1 (sign p); Δ type P@10, Δ t+c P@10 (se)")
    for setting, per_label in pairing.items():
        for label, per in per_label.items():
            for perturbation, pr in per.items():
                print(
                    f"{setting}\t{label}\t{perturbation}\t+{pr['gained']} / -{pr['lost']} "
                    f"(p {pr['sign p']:.3f})\t{pr['Δ type P@10']:+.3f} "
                    f"({pr['se type P@10']:.3f})\t{pr['Δ type+colour P@10']:+.3f} "
                    f"({pr['se type+colour P@10']:.3f})"
                )

    out = Path(args.out)
    write_report(
        out,
        {
            "model": args.model,
            "fold": args.fold,
            "gallery": len(gallery),
            "fitted_on": len(fit_rows),
            "queries": len(qids),
            "seed": args.seed,
            "results": results,
            "paired_with_lambda_0": pairing,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
