"""Projection heads in torch (build, fit, export) and their merging and low-rank cut in numpy.

The torch :func:`build_head` mirrors :class:`clipy_qdrant.encoders.fashion.ProjectionHead`;
:func:`head_tensors` exports one as the arrays that file holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.encoders.fashion import WordBag


def build_head(
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


def head_tensors(head: Any, prefix: str) -> dict[str, np.ndarray]:
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


#: Scale of the word-bag columns in the text head's input standardisation.
WORD_BAG_STD = 0.25


def word_bag_matrix(bag: WordBag, texts: Sequence[str]) -> Any:
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


def text_standardisation(
    features: np.ndarray, bag: WordBag | None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of text head inputs: MiniLM columns standardised over ``features``;
    word-bag columns not standardised (sparse), scaled to about unit size."""
    mean, std = features.mean(0), features.std(0) + 1e-3
    if bag is not None:
        mean = np.concatenate([mean, np.zeros(len(bag), np.float32)])
        std = np.concatenate([std, np.full(len(bag), WORD_BAG_STD, np.float32)])
    return mean, std


def text_rows(features: Any, bag_rows: Any, idx: np.ndarray) -> Any:
    """Torch text head inputs of rows ``idx``: MiniLM features, then dense word-bag columns."""
    import torch

    rows = features[torch.from_numpy(idx)]
    if bag_rows is None:
        return rows
    return torch.cat([rows, torch.from_numpy(bag_rows[idx].toarray())], dim=1)


def fit_head(
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


def fit_classifier(
    head: Any, x: Any, y: Any, epochs: int, generator: Any, batch: int, bar: Any
) -> None:
    """:func:`fit_head` with cross-entropy (label smoothing 0.1) of ``head(x)`` against the
    class indices ``y``: the image colour and type heads."""
    import torch

    def loss(idx: Any) -> Any:
        return torch.nn.functional.cross_entropy(head(x[idx]), y[idx], label_smoothing=0.1)

    fit_head(head, len(x), epochs, generator, loss, batch, bar)


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


def low_rank_hidden(
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


def mean_of_heads(runs: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
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
