"""The image classifier heads: colour (image and text) and articleType (image only).

Each is trained as several seeded members merged into one head (mean logits); their
probability blocks join the encoder's vectors (:class:`~clipy_qdrant.encoders.fashion.ColourHeads`,
:class:`~clipy_qdrant.encoders.fashion.TypeHead`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.encoders.fashion import WordBag
from clipy_qdrant.errors import InputError
from clipy_qdrant.training.captions import colour_caption_targets
from clipy_qdrant.training.config import (
    COLOUR_HIDDEN,
    COLOUR_RANK,
    COLOUR_SEEDS,
    TYPE_HIDDEN,
    TYPE_SEEDS,
)
from clipy_qdrant.training.features import cached_text_features
from clipy_qdrant.training.heads import (
    build_head,
    fit_classifier,
    fit_head,
    head_tensors,
    low_rank_hidden,
    mean_of_heads,
    text_rows,
    text_standardisation,
    word_bag_matrix,
)
from clipy_qdrant.training.products import ProductLike
from clipy_qdrant.training.products import clean as _clean


def labelled_inputs(
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
    cache_dir: Path,
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
      logits (:func:`~clipy_qdrant.training.heads.mean_of_heads`). Member m shuffles with
      seed ``seed + m``; the first initialises from the caller's torch RNG, the others after
      ``torch.manual_seed(seed + m)``. Merging steadies colour P@1, which swings with one
      member's seed (MODEL_CARD.md, "Colour heads").
    - ``rank`` > 0 then cuts the merged image hidden layer to that rank
      (:func:`~clipy_qdrant.training.heads.low_rank_hidden`, fitted on the training inputs),
      so it costs less at inference.

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
    x, codes, classes = labelled_inputs(products, rows, image_inputs, "baseColour")
    if len(classes) < 2:  # a catalog without colours: no colour heads, no colour block
        return {}, []
    y = torch.from_numpy(codes)
    texts, targets = colour_caption_targets([products[i] for i in rows], classes, augment)
    feats = cached_text_features(texts, cache_dir, threads=threads, progress=progress)
    bag_rows = word_bag_matrix(bag, texts) if bag is not None else None
    txt_mean, txt_std = text_standardisation(feats, bag)
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
        if member:  # the first member draws from the caller's torch RNG
            torch.manual_seed(seed + member)
        generator = torch.Generator().manual_seed(seed + member)
        image_head = build_head(x.shape[1], len(classes), hidden, x_mean, x_std, normalize=False)
        text_head = build_head(
            len(txt_mean), len(classes) + 1, 0, txt_mean, txt_std, normalize=False
        )
        image_head.dropout.p = 0.2
        fit_classifier(image_head, x_t, y, epochs, generator, batch, bar)

        def text_loss(idx: Any, head: Any = text_head) -> Any:
            log_p = torch.log_softmax(head(text_rows(feats_t, bag_rows, idx.numpy())), 1)
            return -(targets_t[idx] * log_p).sum(1).mean()

        fit_head(text_head, len(texts), text_epochs, generator, text_loss, batch, bar)
        runs.append(
            {**head_tensors(image_head, "colour_image"), **head_tensors(text_head, "colour_text")}
        )
    bar.close()
    merged = mean_of_heads(runs)
    if hidden and rank:
        z = (x - merged["colour_image.mean"]) / merged["colour_image.std"]
        merged = low_rank_hidden(merged, "colour_image", z, rank)
    return merged, classes


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
    x, codes, classes = labelled_inputs(
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
        head = build_head(x.shape[1], len(classes), hidden, x_mean, x_std, normalize=False)
        head.dropout.p = 0.2
        fit_classifier(head, x_t, y, epochs, generator, batch, bar)
        runs.append(head_tensors(head, "type_image"))
    bar.close()
    return mean_of_heads(runs), classes
