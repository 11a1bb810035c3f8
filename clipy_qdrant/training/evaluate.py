"""Held-out acceptance numbers of trained heads: text→image known-item, attribute and
image→image queries, scored with :mod:`clipy_qdrant.eval.metrics`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.encoders.fashion import WordBag
from clipy_qdrant.encoders.fashion.colour import COLOUR_SPEC
from clipy_qdrant.encoders.fashion.towers import (
    DEFAULT_BACKBONE,
    DEFAULT_POOLING,
    DEFAULT_RESOLUTION,
)
from clipy_qdrant.errors import ClipyError
from clipy_qdrant.eval.metrics import hit_rate, mrr_at_k, precision_at_k, recall_at_k
from clipy_qdrant.split import fold_of
from clipy_qdrant.training.features import cached_image_features, cached_text_features
from clipy_qdrant.training.products import ProductLike
from clipy_qdrant.training.products import clean as _clean


def _ranks_pessimistic(scores: np.ndarray, target_cols: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target, counting every tie with the target against it."""
    target = scores[np.arange(len(scores)), target_cols]
    return (scores >= target[:, None]).sum(axis=1)


#: The known-item target's id in :func:`_ranking_with_target_at` rankings.
_TARGET = frozenset({"target"})


def _ranking_with_target_at(rank: int, k: int) -> list[str]:
    """A ranking (cut at ``k``) whose one relevant id sits at 1-based ``rank``."""
    return [f"other-{i}" for i in range(min(rank, k + 1) - 1)] + (["target"] if rank <= k else [])


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the top ``k`` per row, best first (ties by column order)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def evaluate_vectors(
    image_vecs: np.ndarray,
    products: Sequence[ProductLike],
    encode_texts: Any,
    *,
    known_item_queries: int = 2000,
    image_queries: int = 500,
    seed: int = 0,
    fold: int = 0,
) -> dict[str, float]:
    """Held-out acceptance numbers for product image vectors and a text encoder.

    - ``known_item_recall@10`` / ``known_item_mrr@10``: held-out product names (a seeded
      sample of ``known_item_queries``) against every product's image vector; ties are
      pessimistic (the target ranks after every product with an equal score).
    - ``article_type_p@10``: each articleType value of the held-out products as query,
      gallery = held-out image vectors. Many types have fewer than 10 held-out products, so
      strict P@10 cannot reach 1 (its ceiling on the full catalog is 0.70); ``article_type_p@10_10plus``
      averages only types with ≥ 10 held-out products, ``article_type_p@10_capped`` divides
      the hits by ``min(10, #products of the type)``.
    - ``colour_p@1``: each baseColour value as query, held-out gallery, mean P@1.
    - ``image_p@10_type`` / ``image_p@10_type_colour``: ``image_queries`` held-out images
      (0: every held-out product), gallery the other held-out products. ``…_answerable``
      averages only the queries that have at least one relevant product in that gallery
      (another of the same type, resp. type and colour), the rule ``clipy eval`` generates
      its image queries by; a query without one scores 0 whatever the model does.

    ``fold`` picks the evaluated products (:func:`clipy_qdrant.split.fold_of`): 0 is the
    held-out split; 1..4 is a validation fold of a model trained without it.
    """
    rng = np.random.default_rng(seed)
    held = np.asarray([fold_of(p.product_id) == fold for p in products])
    held_idx = np.flatnonzero(held)
    if len(held_idx) == 0:
        raise ClipyError("no held-out products to evaluate on")
    metrics: dict[str, float] = {}

    # 1. known item: each query's ranking puts its product at its pessimistic rank.
    n_q = min(known_item_queries, len(held_idx))
    query_rows = np.sort(rng.choice(held_idx, size=n_q, replace=False))
    names = [products[i].text for i in query_rows]
    text_vecs = encode_texts(names)
    ranks = np.concatenate(
        [
            _ranks_pessimistic(text_vecs[s : s + 256] @ image_vecs.T, query_rows[s : s + 256])
            for s in range(0, n_q, 256)
        ]
    )
    rankings = [_ranking_with_target_at(int(rank), 10) for rank in ranks]
    metrics["known_item_recall@10"] = float(
        np.mean([recall_at_k(ranked, _TARGET, 10) for ranked in rankings])
    )
    metrics["known_item_mrr@10"] = float(
        np.mean([mrr_at_k(ranked, _TARGET, 10) for ranked in rankings])
    )
    metrics["known_item_recall@1"] = float(
        np.mean([hit_rate(ranked, _TARGET, 1) for ranked in rankings])
    )

    held_vecs = image_vecs[held_idx]
    held_meta = [products[int(i)].metadata for i in held_idx]
    types = np.asarray([_clean(m.get("articleType")) for m in held_meta])
    colours = np.asarray([_clean(m.get("baseColour")) for m in held_meta])
    gallery = [str(i) for i in range(len(held_idx))]

    # 2. articleType -> product
    type_values = sorted({t for t in types if t})
    top = _topk(encode_texts(type_values) @ held_vecs.T, 10)
    shown = top.shape[1]
    relevant_of = {t: {gallery[i] for i in np.flatnonzero(types == t)} for t in type_values}
    ranked_of = [[gallery[j] for j in row] for row in top]
    p10 = np.asarray(
        [precision_at_k(ranked_of[i], relevant_of[t], shown) for i, t in enumerate(type_values)]
    )
    metrics["article_type_p@10"] = float(p10.mean())
    hits = np.asarray(
        [sum(pid in relevant_of[t] for pid in ranked_of[i]) for i, t in enumerate(type_values)]
    )
    reachable = np.asarray([min(10, len(relevant_of[t])) for t in type_values])
    metrics["article_type_p@10_capped"] = float(np.mean(hits / reachable))
    big = np.asarray([len(relevant_of[t]) >= 10 for t in type_values])
    metrics["article_type_p@10_10plus"] = float(p10[big].mean()) if big.any() else 0.0

    # 3. baseColour -> product
    colour_values = sorted({c for c in colours if c})
    top1 = _topk(encode_texts(colour_values) @ held_vecs.T, 1)
    by_colour = {c: {gallery[i] for i in np.flatnonzero(colours == c)} for c in colour_values}
    metrics["colour_p@1"] = float(
        np.mean(
            [
                precision_at_k([gallery[top1[i, 0]]], by_colour[c], 1)
                for i, c in enumerate(colour_values)
            ]
        )
    )

    # 4. image -> image
    if image_queries <= 0:  # every evaluated product is a query
        q_local = np.arange(len(held_idx))
    else:
        n_img = min(image_queries, len(held_idx))
        q_local = np.sort(rng.choice(len(held_idx), size=n_img, replace=False))
    tops = []
    for start in range(0, len(q_local), 1024):
        block = q_local[start : start + 1024]
        sims = held_vecs[block] @ held_vecs.T
        sims[np.arange(len(block)), block] = -np.inf  # the query itself is not a result
        tops.append(_topk(sims, 10))
    top = np.concatenate(tops)
    shown = top.shape[1]
    by_type: dict[str, set[str]] = {}
    by_pair: dict[tuple[str, str], set[str]] = {}
    for i, (t, c) in enumerate(zip(types.tolist(), colours.tolist(), strict=True)):
        by_type.setdefault(t, set()).add(gallery[i])
        by_pair.setdefault((t, c), set()).add(gallery[i])
    q_types, q_colours = types[q_local].tolist(), colours[q_local].tolist()
    image_rankings = [[gallery[j] for j in row] for row in top]
    p_type = np.asarray(
        [precision_at_k(r, by_type[t], shown) for r, t in zip(image_rankings, q_types, strict=True)]
    )
    p_pair = np.asarray(
        [
            precision_at_k(r, by_pair[(t, c)], shown)
            for r, t, c in zip(image_rankings, q_types, q_colours, strict=True)
        ]
    )
    metrics["image_p@10_type"] = float(p_type.mean())
    metrics["image_p@10_type_colour"] = float(p_pair.mean())
    # Answerable: another product of the query's type (resp. type and colour) is in the gallery.
    has_type = np.asarray([bool(t) and len(by_type[t]) > 1 for t in q_types])
    has_pair = has_type & np.asarray(
        [bool(c) and len(by_pair[(t, c)]) > 1 for t, c in zip(q_types, q_colours, strict=True)]
    )
    if has_type.any():
        metrics["image_p@10_type_answerable"] = float(p_type[has_type].mean())
    if has_pair.any():
        metrics["image_p@10_type_colour_answerable"] = float(p_pair[has_pair].mean())
    return metrics


def evaluate_fashion_model(
    products: Sequence[ProductLike],
    model_dir: str | Path | None = None,
    *,
    cache_dir: Path,
    seed: int = 0,
    progress: bool = True,
    image_queries: int = 500,
) -> dict[str, float]:
    """Held-out metrics (:func:`evaluate_vectors`) of a model folder (default: the shipped one).

    Runs the numpy heads of :mod:`clipy_qdrant.encoders.fashion` on the cached tower features
    (the same features the encoder computes, cached by product id).
    """
    from clipy_qdrant.encoders.fashion.model_dir import (
        DEFAULT_MODEL_DIR,
        read_model_dir,
        read_word_bag,
    )

    folder = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    config, tensors = read_model_dir(folder)
    bag = read_word_bag(folder, config)
    if config.get("colour_spec", COLOUR_SPEC) != COLOUR_SPEC:
        raise ClipyError("the model was trained with another colour descriptor than this clipy's")
    feats, colours = cached_image_features(
        products,
        cache_dir,
        backbone=str(config.get("backbone", DEFAULT_BACKBONE)),
        resolution=int(config.get("resolution", DEFAULT_RESOLUTION)),
        pooling=str(config.get("image_pooling", DEFAULT_POOLING)),
        progress=progress,
    )
    image_inputs = np.concatenate([feats, colours], axis=1)
    return evaluate_tensors(
        tensors, config, image_inputs, products, cache_dir, seed, bag, image_queries=image_queries
    )


def evaluate_tensors(
    tensors: dict[str, np.ndarray],
    config: dict[str, Any],
    image_inputs: np.ndarray,
    products: Sequence[ProductLike],
    cache_dir: Path,
    seed: int,
    bag: WordBag | None = None,
    fold: int = 0,
    appearance_weight: float | None = None,
    image_queries: int = 500,
) -> dict[str, float]:
    """:func:`evaluate_vectors` for stored heads, run exactly as the encoder runs them."""
    from clipy_qdrant.encoders.fashion import FashionHeads

    heads = FashionHeads.from_model(tensors, config, bag, appearance_weight)
    image_vecs = heads.image_vectors(image_inputs)

    def encode_texts(texts: Sequence[str]) -> np.ndarray:
        feats = cached_text_features(list(texts), cache_dir, progress=False)
        return heads.text_vectors(feats, texts)

    return evaluate_vectors(
        image_vecs, products, encode_texts, seed=seed, fold=fold, image_queries=image_queries
    )
