"""The contrastive stage: the shared image and text heads (and the image-only appearance head)
trained with a CLIP loss on cached tower features."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipy_qdrant.encoders.fashion import WordBag
from clipy_qdrant.errors import ConfigError
from clipy_qdrant.training.config import TrainConfig
from clipy_qdrant.training.heads import build_head, text_rows, text_standardisation

#: Share of the one-cycle schedule's steps spent warming up to the peak learning rate.
WARMUP_SHARE = 0.1


def one_cycle_schedule(optimiser: Any, max_lr: float, total_steps: int) -> Any:
    """A one-cycle learning-rate schedule (warm-up from ``max_lr / 25`` to ``max_lr``, cosine
    decay) over ``total_steps`` optimiser steps, for any ``total_steps`` >= 1.

    The warm-up takes :data:`WARMUP_SHARE` of the steps when that is at least two steps, else
    exactly two (the peak at the second step): torch's ``OneCycleLR`` divides by zero when its
    warm-up or its decay has no length. One or two steps run at ``max_lr``.
    """
    import torch

    if total_steps < 1:
        raise ConfigError(f"the learning-rate schedule needs at least 1 step, got {total_steps}")
    if total_steps <= 2:
        return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _step: 1.0)
    share = WARMUP_SHARE if WARMUP_SHARE * total_steps >= 2 else 2 / total_steps
    return torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=share,
        anneal_strategy="cos",
    )


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


def caption_positives(
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


@dataclass
class SharedHeads:
    """The torch heads of the contrastive stage and their learnt logit scale."""

    image: Any
    text: Any
    appearance: Any | None
    logit_scale: Any

    def parameters(self) -> list[Any]:
        """Every head's parameters (the logit scale apart)."""
        params = [*self.image.parameters(), *self.text.parameters()]
        if self.appearance is not None:
            params += list(self.appearance.parameters())
        return params

    def train(self) -> None:
        """Put every head in training mode (dropout on)."""
        self.image.train()
        self.text.train()
        if self.appearance is not None:
            self.appearance.train()


def build_shared_heads(
    train_x: np.ndarray, text_inputs: np.ndarray, bag: WordBag | None, config: TrainConfig
) -> SharedHeads:
    """Untrained heads: image inputs standardised over ``train_x``, text inputs over
    ``text_inputs`` (MiniLM columns; the word-bag columns join the text head's linear path)."""
    import torch

    img_mean, img_std = train_x.mean(0), train_x.std(0) + 1e-3
    txt_mean, txt_std = text_standardisation(text_inputs, bag)
    hidden = config.hidden
    image_head = build_head(train_x.shape[1], config.dim, hidden, img_mean, img_std)
    text_head = build_head(
        len(txt_mean),
        config.dim,
        hidden if config.text_hidden is None else config.text_hidden,
        txt_mean,
        txt_std,
        hidden_in=text_inputs.shape[1],
    )
    image_head.dropout.p = config.input_dropout
    appearance_head = (
        build_head(train_x.shape[1], config.appearance_dim, hidden, img_mean, img_std)
        if config.appearance_dim > 0
        else None
    )
    if appearance_head is not None:
        appearance_head.dropout.p = config.input_dropout
    logit_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    return SharedHeads(image_head, text_head, appearance_head, logit_scale)


@dataclass
class ContrastiveData:
    """The training set of the contrastive stage, one row per training product.

    ``caption_ids[j]``: row j's captions as rows of ``text_inputs`` (its name first);
    ``types``: row j's articleType; ``image_labels``: its (articleType, baseColour) class;
    ``attribute_labels``: (per-row code or -1, names) of the colour and type names that
    ``attribute_weight`` pairs images with; ``text_index``: text → row of ``text_inputs``.
    """

    train_x: np.ndarray
    text_inputs: np.ndarray
    bag_rows: Any
    caption_ids: list[np.ndarray]
    types: np.ndarray
    image_labels: Any
    attribute_labels: list[tuple[Any, list[str]]]
    text_index: dict[str, int]


def fit_shared_heads(
    heads: SharedHeads, data: ContrastiveData, config: TrainConfig, progress: bool = True
) -> list[float]:
    """Train ``heads`` for ``config.epochs`` epochs; returns each epoch's mean loss.

    Each epoch pairs every training image with one caption: its name with probability
    ``name_weight``, else one of its attribute phrases. Identical captions in a batch are all
    positives of each other; with ``phrase_positives`` an image is a positive of every batch
    caption that is one of its own. ``hard_negative_groups`` > 0 fills each batch with that
    many blocks of one articleType. ``attribute_weight``, the appearance head and
    ``image_label_weight`` add their terms to the batch loss.
    """
    import torch
    from tqdm import tqdm

    rng = np.random.default_rng(config.seed)
    batch_size = config.batch_size
    optimiser = torch.optim.AdamW(
        [
            {"params": heads.parameters(), "weight_decay": config.weight_decay},
            {"params": [heads.logit_scale], "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    n = len(data.train_x)
    steps_per_epoch = max(1, int(np.ceil(n / batch_size)))
    total_steps = config.epochs * steps_per_epoch
    scheduler = one_cycle_schedule(optimiser, config.lr, total_steps)
    train_x_t = torch.from_numpy(data.train_x)
    text_t = torch.from_numpy(data.text_inputs)
    caption_ids = data.caption_ids
    types = data.types
    image_head, text_head, appearance_head = heads.image, heads.text, heads.appearance
    logit_scale = heads.logit_scale

    def text_batch(caps: np.ndarray) -> Any:
        return text_rows(text_t, data.bag_rows, caps)

    def epoch_order() -> np.ndarray:
        order = rng.permutation(n)
        if config.hard_negative_groups <= 0:
            return order
        # Blocks of one articleType each, so a batch holds look-alike products.
        block = max(1, batch_size // config.hard_negative_groups)
        by_type = order[np.argsort(types[order], kind="stable")]
        blocks = [by_type[s : s + block] for s in range(0, n, block)]
        return np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])

    losses: list[float] = []
    bar = tqdm(
        total=total_steps,
        desc="training fashion-mini heads",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )
    for _epoch in range(config.epochs):
        heads.train()
        order = epoch_order()
        chosen = np.empty(n, dtype=np.int64)
        use_name = rng.random(n) < config.name_weight
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
            if config.phrase_positives:
                same = torch.from_numpy(caption_positives(caption_ids, rows, chosen[rows]))
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
            for codes, names in data.attribute_labels:
                batch_codes = codes[rows_t]
                present = torch.unique(batch_codes[batch_codes >= 0])
                name_rows = np.asarray([data.text_index[names[int(c)]] for c in present], np.int64)
                name_vecs = text_head(text_batch(name_rows))
                positives = (batch_codes[:, None] == present[None, :]).float()
                loss = loss + config.attribute_weight * _multi_positive_clip(
                    img, name_vecs, positives, logit_scale.exp().clamp(max=100.0)
                )
            if appearance_head is not None:
                appearance = appearance_head(train_x_t[rows_t])
                loss = loss + _supcon(appearance, data.image_labels[rows_t], SUPCON_SCALE)
            if config.image_label_weight > 0:
                loss = loss + config.image_label_weight * _supcon(
                    img, data.image_labels[rows_t], logit_scale.exp().clamp(max=100.0)
                )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            epoch_loss += float(loss.detach()) * len(rows)
            bar.update(1)
        losses.append(epoch_loss / n)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{float(logit_scale.exp().detach()):.1f}")
    bar.close()
    return losses
