"""Cache of the frozen towers' features, keyed by product id (images) or string (texts).

Features are computed once per backbone / resolution / pooling (images) and colour descriptor
spec, then read from ``cache_dir/features``, so an epoch over ~35k training products takes
seconds.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipy_qdrant.encoders.fashion.colour import COLOUR_SPEC, colour_descriptor
from clipy_qdrant.encoders.fashion.towers import (
    DEFAULT_BACKBONE,
    DEFAULT_POOLING,
    DEFAULT_RESOLUTION,
    ImageTower,
    TextTower,
    preprocess_image,
)
from clipy_qdrant.errors import InputError
from clipy_qdrant.training.products import ProductLike


def _cache_root(cache_dir: Path) -> Path:
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
    cache_dir: Path,
    *,
    backbone: str = DEFAULT_BACKBONE,
    resolution: int = DEFAULT_RESOLUTION,
    pooling: str = DEFAULT_POOLING,
    batch_size: int = 64,
    threads: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(backbone features (n, feature_dim), colour descriptors (n, COLOUR_DIM)) for ``products``.

    Two caches keyed by product id: one npz per backbone/resolution and one per colour
    descriptor spec under ``cache_dir/features``; only products missing from a cache are
    decoded and encoded.
    """
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


# Features computed one text per inference call (see cached_text_features).
TEXT_CACHE_FILE = "text-minilm-l6-v2-single.npz"


def cached_text_features(
    texts: Sequence[str],
    cache_dir: Path,
    *,
    threads: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """(n, 384) MiniLM features of ``texts``, cached per distinct string.

    Each text is encoded on its own, unpadded: a text's feature then depends on the text
    alone, not on which other texts shared its padded batch, so the cache holds the same
    bytes however many runs filled it, and a training run from any cache state writes the
    same heads. Batched, padded inference differs in the last bits (up to ~6e-8) with the
    batch's padding width.
    """
    from tqdm import tqdm

    path = _cache_root(cache_dir) / TEXT_CACHE_FILE
    store = _load_store(path)
    known = [str(t) for t in store.get("texts", np.zeros(0, dtype=str)).tolist()]
    index = {text: i for i, text in enumerate(known)}
    missing = sorted({t for t in texts if t not in index})
    if missing:
        tower = TextTower(cache_dir=cache_dir, threads=threads)
        features = np.empty((len(missing), 384), dtype=np.float32)
        for i, text in enumerate(
            tqdm(missing, desc="text features", unit="txt", file=sys.stderr, disable=not progress)
        ):
            features[i] = tower.features([text], batch_size=1)[0]
        all_texts = known + missing
        store = {
            "texts": np.asarray(all_texts),
            "features": np.concatenate(
                [store.get("features", np.zeros((0, 384), np.float32)), features]
            ),
        }
        _save_store(path, store)
        index = {text: i for i, text in enumerate(all_texts)}
    rows = np.asarray([index[t] for t in texts], dtype=np.int64)
    return store["features"][rows]
