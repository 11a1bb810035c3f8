"""The backbone block: part of the frozen backbone's own features, kept in image vectors.

The trained heads gather products of the same type and colour and give up instance detail,
while the frozen backbone's pooled features hold one product under a shopper's crop,
background or lighting far better (docs/experiments.md, "Raw backbone block in the image
vector"). The block keeps that: the L2-normalised backbone features, centred on the training
products' mean, projected on their first ``dim`` principal axes and whitened (each axis
divided by its standard deviation), then L2-normalised.

An image vector with the block is ``[sqrt(1 - weight)·h ; sqrt(weight)·r]`` (``h`` the heads'
unit vector, ``r`` the unit block), itself unit: image→image cosine is ``(1 - weight)·cos(h)
+ weight·cos(r)``. Text vectors carry zeros there, so a text query meets every image vector at
``sqrt(1 - weight)`` × its cosine with ``h``: text→image ranking is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from clipy_qdrant.encoders.base import l2_normalize
from clipy_qdrant.errors import EncoderError

PREFIX = "backbone_block"
CONFIG_KEY = "backbone_block"
#: BLAS threads of the fit's decomposition: two, the count the shipped block was fitted with.
FIT_BLAS_THREADS = 2


@dataclass
class BackboneBlock:
    """The fitted block: ``centre`` (features,), ``axes`` (features, dim), ``scale`` (dim,),
    and the ``weight`` (0 < weight < 1) of the block's part of an image vector's square norm."""

    centre: np.ndarray
    axes: np.ndarray
    scale: np.ndarray
    weight: float

    def __post_init__(self) -> None:
        if not 0.0 < self.weight < 1.0:
            raise EncoderError(f"backbone block weight must be in (0, 1), got {self.weight}")
        features, dim = self.axes.shape
        if self.centre.shape != (features,) or self.scale.shape != (dim,):
            raise EncoderError(
                f"backbone block tensors disagree: centre {self.centre.shape}, axes "
                f"{self.axes.shape}, scale {self.scale.shape}"
            )

    @property
    def dim(self) -> int:
        return int(self.axes.shape[1])

    @property
    def features(self) -> int:
        """Leading columns of the image inputs the block reads (the backbone's features)."""
        return int(self.axes.shape[0])

    @classmethod
    def from_model(
        cls, tensors: dict[str, np.ndarray], config: dict[str, Any]
    ) -> BackboneBlock | None:
        """The model's block, or None when its config has none."""
        block = config.get(CONFIG_KEY)
        if not block:
            return None
        try:
            return cls(
                centre=tensors[f"{PREFIX}.centre"].astype(np.float32),
                axes=tensors[f"{PREFIX}.axes"].astype(np.float32),
                scale=tensors[f"{PREFIX}.scale"].astype(np.float32),
                weight=float(block["weight"]),
            )
        except KeyError as exc:
            raise EncoderError(f"the model's backbone block lacks {exc}") from None

    def tensors(self) -> dict[str, np.ndarray]:
        """The block's arrays as stored in ``heads.safetensors`` (float32)."""
        return {
            f"{PREFIX}.centre": self.centre.astype(np.float32),
            f"{PREFIX}.axes": self.axes.astype(np.float32),
            f"{PREFIX}.scale": self.scale.astype(np.float32),
        }

    def config(self) -> dict[str, Any]:
        """The block's entry in the model's ``config.json`` (it shapes vectors: fingerprinted)."""
        return {"dim": self.dim, "weight": self.weight, "whitened": True}

    def block(self, inputs: np.ndarray) -> np.ndarray:
        """(n, image inputs) -> (n, dim) unit block rows."""
        x = l2_normalize(inputs[:, : self.features].astype(np.float32))
        return l2_normalize(((x - self.centre) @ self.axes) / self.scale)

    def join(self, vectors: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """Unit image vectors from the heads -> ``[sqrt(1 - w)·h ; sqrt(w)·r]``."""
        head_part = np.float32(np.sqrt(1.0 - self.weight)) * vectors
        block_part = np.float32(np.sqrt(self.weight)) * self.block(inputs)
        return np.ascontiguousarray(np.concatenate([head_part, block_part], axis=1))

    def pad(self, vectors: np.ndarray) -> np.ndarray:
        """Text vectors -> the same with zeros in the block's dims."""
        zeros = np.zeros((len(vectors), self.dim), dtype=vectors.dtype)
        return np.ascontiguousarray(np.concatenate([vectors, zeros], axis=1))


def fit_backbone_block(features: np.ndarray, dim: int, weight: float) -> BackboneBlock:
    """Fit the block on training products' backbone features (rows).

    Principal axes of the L2-normalised, centred rows (float64), in order of decreasing
    variance; each axis's sign is fixed so that its largest-magnitude entry is positive, so
    the same rows never give an axis and its negative on two machines. With more rows than
    features they are the covariance matrix's eigenvectors; with fewer, the rows' right
    singular vectors (the same axes), and the block keeps at most ``rows - 1`` axes, as
    centred rows span no more: a small catalog gets no axes of zero variance, which
    whitening would blow up.

    The decomposition runs on :data:`FIT_BLAS_THREADS` BLAS threads whatever the process's
    setting (a server caps BLAS at one thread): its last bits depend on how many threads
    share the work (axes move by about 1e-11 between one and two threads on catalog
    features, enough to flip float32 roundings), and a training writes the same bytes in
    any process.
    """
    with threadpool_limits(limits=FIT_BLAS_THREADS, user_api="blas"):
        return _fit(features, dim, weight)


def _fit(features: np.ndarray, dim: int, weight: float) -> BackboneBlock:
    """:func:`fit_backbone_block` under its BLAS thread count."""
    rows, width = features.shape
    if rows < 2:
        raise EncoderError(f"the backbone block needs at least 2 products, got {rows}")
    if not 0 < dim <= width:
        raise EncoderError(f"backbone block dims must be in 1..{width}, got {dim}")
    x = l2_normalize(features.astype(np.float32)).astype(np.float64)
    centre = x.mean(axis=0)
    centred = x - centre
    if rows > width:
        values, vectors = np.linalg.eigh(centred.T @ centred / (rows - 1))
        order = np.argsort(values)[::-1][:dim]
        values, axes = values[order], vectors[:, order]
    else:
        dim = min(dim, rows - 1)
        _, singular, rows_axes = np.linalg.svd(centred, full_matrices=False)
        values, axes = singular[:dim] ** 2 / (rows - 1), rows_axes[:dim].T.copy()
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(dim)])
    axes *= np.where(signs == 0, 1.0, signs)
    scale = np.sqrt(np.maximum(values, 1e-12))
    return BackboneBlock(
        centre=centre.astype(np.float32),
        axes=axes.astype(np.float32),
        scale=scale.astype(np.float32),
        weight=weight,
    )
