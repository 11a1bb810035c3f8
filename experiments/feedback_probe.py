"""Probe pseudo-relevance feedback for fashion-mini's short text→image queries, per fold.

Search does not apply this feedback: its gain on the validation folds did not hold on the
held-out products (docs/experiments.md, "Pseudo-relevance feedback"). For a one- or two-word
query q:
q' = unit((1 − alpha) · q + alpha · unit(mean of the first ``depth`` image vectors)), searched
against the fold's image vectors (the stored vectors: shared part plus the appearance part).
Image vectors are computed from the cached tower features with the model's heads, exactly as
the encoder computes them. Query sets are clipy eval's generators about one fold: category
values (articleType, subCategory, masterCategory, baseColour; gallery = that fold) and
attribute phrases (the "attr ≤2w" column averages those of one or two words).

    python experiments/feedback_probe.py --model DIR1 --fold 1 --model DIR2 --fold 2 ...

Each DIR is a model trained with ``--validation-fold K`` for its fold K (tune there, never on
the held-out fold 0). Prints one row per (depth, alpha) averaged over the folds, with colour
P@1 per fold, and writes JSON (``--out``). Needs the catalog and its cached features.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from clipy_qdrant.config import Settings

_WORD = re.compile(r"\w+")


def feedback_gate(text: str) -> float:
    """1 for a query of one or two words, else 0."""
    return 1.0 if 0 < len(_WORD.findall(text)) <= 2 else 0.0


def expand_query(query: np.ndarray, neighbours: np.ndarray, alpha: float) -> np.ndarray:
    """``unit((1 - alpha) * unit(query) + alpha * unit(mean(unit(neighbours))))``."""
    from clipy_qdrant.encoders.base import l2_normalize

    q = l2_normalize(query.reshape(1, -1))[0]
    centre = l2_normalize(l2_normalize(neighbours).mean(axis=0, keepdims=True))[0]
    return l2_normalize(((1.0 - alpha) * q + alpha * centre).reshape(1, -1))[0]


GRID = [(0, 0.0)] + [(d, a) for d in (5, 10, 20) for a in (0.2, 0.35, 0.5)]
METRICS = (
    "colour P@1",
    "colour P@10",
    "type P@10 (>=10)",
    "type P@10",
    "sub P@10",
    "master P@10",
    "attr <=2w P@10",
    "attr P@10",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=str(Settings().catalog))
    parser.add_argument("--model", action="append", required=True, help="model folder")
    parser.add_argument("--fold", action="append", type=int, required=True, help="its fold")
    parser.add_argument("--out", default="experiments-out/feedback_probe.json")
    args = parser.parse_args(argv)
    if len(args.model) != len(args.fold):
        parser.error("give one --fold per --model")

    import clipy_qdrant.eval.catalog_queries as queries
    from clipy_qdrant.encoders.fashion import load_fashion_encoder
    from clipy_qdrant.eval.queries import EvalQuery
    from clipy_qdrant.training.features import cached_image_features
    from ingest.readers import NAME_TEXT_TEMPLATE, open_catalog

    products = list(open_catalog(args.catalog, text_template=NAME_TEXT_TEMPLATE))
    fold_of = np.asarray([int(p.product_id) % 5 for p in products])
    payloads = [
        {**p.metadata, "product_id": p.product_id, "productDisplayName": p.text} for p in products
    ]
    results: dict[str, list[dict[str, float]]] = {}
    for model_dir, fold in zip(args.model, args.fold, strict=True):
        encoder = load_fashion_encoder(model_dir)
        config = encoder.config
        feats, colours = cached_image_features(
            products,
            Settings().cache_dir,
            backbone=str(config["backbone"]),
            resolution=int(config["resolution"]),
            pooling=str(config["image_pooling"]),
            progress=False,
        )
        x = np.concatenate([feats, colours], axis=1).astype(np.float32)
        images = encoder.heads.image_vectors(x)

        def in_fold(pid: str, fold: int = fold) -> bool:
            return int(pid) % 5 == fold

        category = queries.category_queries(payloads, heldout=in_fold)
        attribute = queries.attribute_queries(payloads, heldout=in_fold)
        rows = np.flatnonzero(fold_of == fold)
        gallery = images[rows]

        def relevance(qs: list[EvalQuery], rows: np.ndarray = rows) -> np.ndarray:
            return np.asarray(
                [
                    [
                        all(str(payloads[i].get(k)) in v for k, v in q.relevant_rule.items())
                        for i in rows
                    ]
                    for q in qs
                ]
            )

        rel_c, rel_a = relevance(category), relevance(attribute)
        field = np.asarray([next(iter(q.relevant_rule)) for q in category])
        n_rel = rel_c.sum(1)
        vec_c = encoder.encode_texts([q.text for q in category])
        vec_a = encoder.encode_texts([q.text for q in attribute])
        short_a = np.asarray([feedback_gate(q.text) > 0 for q in attribute])

        def expanded(
            vecs: np.ndarray, texts: list[str], depth: int, alpha: float, g: np.ndarray = gallery
        ) -> np.ndarray:
            if alpha == 0:
                return vecs
            first = np.argsort(-(vecs @ g.T), axis=1)[:, :depth]
            return np.stack(
                [
                    expand_query(v, g[f], alpha) if feedback_gate(t) > 0 else v
                    for v, t, f in zip(vecs, texts, first, strict=True)
                ]
            )

        for depth, alpha in GRID:
            top_c = np.argsort(
                -(expanded(vec_c, [q.text for q in category], depth, alpha) @ gallery.T), 1
            )
            top_a = np.argsort(
                -(expanded(vec_a, [q.text for q in attribute], depth, alpha) @ gallery.T), 1
            )
            hit_c = np.take_along_axis(rel_c, top_c[:, :10], 1)
            hit_a = np.take_along_axis(rel_a, top_a[:, :10], 1)
            colour = field == "baseColour"
            types = field == "articleType"
            m = {
                "colour P@1": hit_c[colour][:, 0].mean(),
                "colour P@10": hit_c[colour].mean(),
                "type P@10 (>=10)": hit_c[types & (n_rel >= 10)].mean(),
                "type P@10": hit_c[types].mean(),
                "sub P@10": hit_c[field == "subCategory"].mean(),
                "master P@10": hit_c[field == "masterCategory"].mean(),
                "attr <=2w P@10": hit_a[short_a].mean(),
                "attr P@10": hit_a.mean(),
            }
            results.setdefault(f"{depth}/{alpha:g}", []).append(
                {"fold": fold, **{k: round(float(v), 4) for k, v in m.items()}}
            )
        print(f"fold {fold} done ({model_dir})", file=sys.stderr, flush=True)

    print(f"folds {args.fold}; mean over folds; depth/alpha 0/0 = no feedback")
    print(f"{'depth/alpha':<12}" + "".join(f"{m:>17}" for m in METRICS) + "  colour P@1 per fold")
    for key, per_fold in results.items():
        means = [np.mean([r[m] for r in per_fold]) for m in METRICS]
        folds = " ".join(f"{r['colour P@1']:.3f}" for r in per_fold)
        print(f"{key:<12}" + "".join(f"{v:>17.3f}" for v in means) + f"  {folds}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"folds": args.fold, "models": args.model, "results": results}, indent=2)
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
