"""Probe the hubness correction of fashion-mini's text→image ranking on one fold.

Search applies this correction (``clipy_qdrant/hubness.py``); this script measures its
settings on cached tower features, without a store, so that beta, the gate and the bank
can be compared on a validation fold. score(q, i) = cos(q, image_i) − c_q · r_i, where r_i is the mean of image i's ``--top``
highest cosines with a bank of product names, and c_q = beta · gate(q) with a word-count gate
(0 for 1–2 words, 1 from 4 words) or none. Image vectors are the shipped heads' shared
part, computed from the cached tower features, exactly as ``clipy train CATALOG
--evaluate-model DIR`` does. Query sets are clipy eval's generators about
one fold: known-item (2,000 names, gallery = whole catalog), category values, attribute
phrases (gallery = that fold).

    python experiments/hubness_probe.py                                  # held-out, shipped heads
    python experiments/hubness_probe.py --model DIR --fold 1 --bank train  # validation fold
    python experiments/hubness_probe.py --bank texts   # bank = the store's own product texts

Prints a table and writes JSON (``--out``). Needs the catalog; the first run computes the
tower features (several minutes), later runs reuse the cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from clipy_qdrant.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=str(Settings().catalog))
    parser.add_argument("--model", default=None, help="fashion-mini model folder [shipped]")
    parser.add_argument("--fold", type=int, default=0, help="queries about id %% 5 == FOLD")
    parser.add_argument(
        "--bank",
        choices=("train", "all", "texts"),
        default="all",
        help="names of the folds the model trained on (train), every product's name (all), or "
        "every product's ingest text, name and attributes (texts: what a store holds)",
    )
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--betas", default="0.5,0.75,1")
    parser.add_argument("--out", default="experiments-out/hubness.json")
    args = parser.parse_args(argv)

    import clipy_qdrant.eval.catalog_queries as queries
    from clipy_qdrant.encoders.fashion import (
        DEFAULT_MODEL_DIR,
        load_fashion_encoder,
    )
    from clipy_qdrant.eval.queries import EvalQuery
    from clipy_qdrant.training.features import cached_image_features
    from ingest.readers import NAME_TEXT_TEMPLATE, open_catalog

    started = time.time()
    model = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    config = json.loads((model / "config.json").read_text())
    products = list(open_catalog(args.catalog, text_template=NAME_TEXT_TEMPLATE))
    fold = np.asarray([int(p.product_id) % 5 for p in products])
    payloads = [
        {**p.metadata, "product_id": p.product_id, "productDisplayName": p.text} for p in products
    ]

    def in_fold(pid: str) -> bool:
        return int(pid) % 5 == args.fold

    known = queries.known_item_queries(payloads, n=2000, seed=0, heldout=in_fold)
    category = queries.category_queries(payloads, heldout=in_fold)
    attribute = queries.attribute_queries(payloads, heldout=in_fold)

    feats, colours = cached_image_features(
        products,
        Settings().cache_dir,
        resolution=int(config["resolution"]),
        pooling=str(config["image_pooling"]),
        progress=True,
    )
    encoder = load_fashion_encoder(str(model))
    # The shared part of the image vectors: the projection head reads the backbone features
    # and the leading (coarse histogram) columns of the colour descriptor.
    image_head = encoder.heads.image
    images = image_head(np.concatenate([feats, colours], 1)[:, : image_head.in_dim])
    shared = int(config["shared_dim"])

    def encode(texts: list[str]) -> np.ndarray:
        return encoder.encode_texts(texts)[:, :shared]

    trained_on = fold != 0 if args.fold == 0 else fold >= 2
    if args.bank == "texts":
        from ingest.readers import DEFAULT_TEXT_TEMPLATE, render_template

        texts = [render_template(DEFAULT_TEXT_TEMPLATE, payload) for payload in payloads]
    else:
        texts = [p.text for p in products]
    bank_names = sorted(
        {
            text
            for text, t in zip(texts, trained_on, strict=True)
            if text and (t or args.bank != "train")
        }
    )
    bank = encode(bank_names)
    hub = np.empty(len(images), np.float32)
    for s in range(0, len(images), 4096):
        sims = images[s : s + 4096] @ bank.T
        hub[s : s + 4096] = -np.partition(-sims, args.top - 1, axis=1)[:, : args.top].mean(1)

    position = {p.product_id: i for i, p in enumerate(products)}
    gallery = np.flatnonzero(fold == args.fold)
    q_known = encode([q.text or "" for q in known])
    target = np.asarray([position[(q.relevant_ids or ("",))[0]] for q in known])

    def relevance(qs: list[EvalQuery]) -> np.ndarray:
        return np.asarray(
            [
                [
                    all(str(payloads[i].get(k)) in v for k, v in (q.relevant_rule or {}).items())
                    for i in gallery
                ]
                for q in qs
            ]
        )

    q_cat, rel_cat = encode([q.text or "" for q in category]), relevance(category)
    q_attr, rel_attr = encode([q.text or "" for q in attribute]), relevance(attribute)
    field = np.asarray([next(iter(q.relevant_rule or {"": 0})) for q in category])

    def gate(qs: list[EvalQuery]) -> np.ndarray:
        words = np.asarray([len((q.text or "").split()) for q in qs], np.float32)
        return np.clip((words - 2) / 2, 0, 1)

    def score(beta: float, gated: bool) -> dict[str, float]:
        def c(qs: list[EvalQuery]) -> np.ndarray:
            return beta * (gate(qs) if gated else np.ones(len(qs), np.float32))

        s = q_known @ images.T - c(known)[:, None] * hub
        own = s[np.arange(len(target)), target][:, None]
        rank = (s > own).sum(1) + (s == own).sum(1) - 1  # ties pessimistic
        sc = q_cat @ images[gallery].T - c(category)[:, None] * hub[gallery]
        hits = np.take_along_axis(rel_cat, np.argsort(-sc, 1)[:, :10], 1)
        sa = q_attr @ images[gallery].T - c(attribute)[:, None] * hub[gallery]
        hits_attr = np.take_along_axis(rel_attr, np.argsort(-sa, 1)[:, :10], 1)
        return {
            "known_item_recall@10": float((rank < 10).mean()),
            "known_item_mrr@10": float(np.where(rank < 10, 1.0 / (rank + 1), 0.0).mean()),
            "article_type_p@10": float(hits[field == "articleType"].mean()),
            "colour_p@1": float(hits[field == "baseColour"][:, 0].mean()),
            "attribute_image_p@10": float(hits_attr.mean()),
        }

    rows = [("none", 0.0, score(0.0, False))]
    for beta in (float(b) for b in args.betas.split(",")):
        rows.append((f"words-gated beta={beta:g}", beta, score(beta, True)))
        rows.append((f"ungated beta={beta:g}", beta, score(beta, False)))
    header = [
        "setting",
        "known R@10",
        "known MRR@10",
        "type P@10",
        "colour P@1",
        "attr P@10 (image)",
    ]
    print(
        f"model {model.name} ({encoder.info.name}), queries about fold {args.fold}, "
        f"bank {args.bank}: {len(bank_names):,} names, r = mean top-{args.top}"
    )
    print(" | ".join(header))
    for name, _, m in rows:
        print(" | ".join([name, *(f"{v:.4f}" for v in m.values())]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "model": encoder.info.name,
        "fold": args.fold,
        "bank": args.bank,
        "bank_size": len(bank_names),
        "top": args.top,
        "rows": [{"setting": n, "beta": b, **m} for n, b, m in rows],
        "seconds": round(time.time() - started, 1),
        "command": "python experiments/hubness_probe.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
