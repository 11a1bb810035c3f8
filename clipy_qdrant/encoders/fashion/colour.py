"""A colour descriptor of a product's foreground: an HSV histogram that ignores the background.

ImageNet features barely tell a red shirt from a blue one; this descriptor does. The
background is the near-white region connected to the image border (a white garment in the
middle of the frame is kept: it does not touch the border through near-white pixels).
Foreground pixels vote into hue × saturation × value bins (chromatic) or value bins
(achromatic: low saturation); each histogram is normalised to sum 1 and square-rooted
(Hellinger), so dot products of one histogram part compare colour distributions. There are
two histograms, a coarse one (12 hues) and a fine one (24 hues, more saturation and value
levels), and six numbers follow them: the mean and standard deviation of the foreground in
CIE Lab (D65). The fine parts separate near colours (navy from blue, maroon from red, cream
from white) for the colour heads; the projection heads read the coarse histogram.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from clipy_qdrant.encoders.images import to_rgb

#: Name of the descriptor layout; stored in the model config so a mismatch is caught.
COLOUR_SPEC = (
    "hsv-fg-v3: [hue12 x sat3 x val3 + grey val5] + [hue24 x sat4 x val5 + grey val8], "
    "each sqrt-normalised, + Lab mean/std, border white removed"
)


@dataclass(frozen=True)
class HistogramSpec:
    """Bins of one HSV histogram: chromatic pixels vote into hue × saturation × value bins,
    achromatic ones (saturation below the first edge) into value bins."""

    hue_bins: int
    sat_edges: tuple[float, ...]
    val_edges: tuple[float, ...]
    grey_bins: int

    @property
    def grey_offset(self) -> int:
        return self.hue_bins * len(self.sat_edges) * (len(self.val_edges) + 1)

    @property
    def dim(self) -> int:
        return self.grey_offset + self.grey_bins


#: The coarse histogram: what the projection heads read.
COARSE = HistogramSpec(12, (0.18, 0.45, 0.72), (0.35, 0.7), 5)
#: The fine histogram: what, with the Lab statistics, the colour heads read in addition.
FINE = HistogramSpec(24, (0.12, 0.3, 0.55, 0.8), (0.25, 0.45, 0.65, 0.85), 8)
#: Columns of the descriptor that the shared and appearance heads read (the coarse histogram).
HISTOGRAM_DIM = COARSE.dim
COLOUR_DIM = COARSE.dim + FINE.dim + 6
#: A pixel is "near white" (background candidate) when every channel is at least this.
WHITE_LEVEL = 232
#: Largest side the descriptor looks at (larger images are shrunk first, for speed).
MAX_SIDE = 96


def foreground_mask(rgb: np.ndarray, white_level: int = WHITE_LEVEL) -> np.ndarray:
    """Boolean (h, w) mask: True where a pixel is not near-white background touching the border
    (4-connected to it through near-white pixels)."""
    near_white = rgb.min(axis=2) >= white_level
    if not near_white.any():
        return np.ones(near_white.shape, dtype=bool)
    mask = ~border_connected(near_white)
    if np.count_nonzero(mask) < 0.01 * mask.size:
        # Nothing left (an all-white picture): describe the whole frame instead.
        return np.ones(near_white.shape, dtype=bool)
    return mask


def border_connected(region: np.ndarray) -> np.ndarray:
    """The pixels of the boolean (h, w) ``region`` that are 4-connected to the image border
    through ``region``.

    Flood fill by runs: a row run (a maximal horizontal stretch of ``region``) touching a
    reached pixel is reached as a whole, then the same for column runs, until nothing changes.
    Each pass crosses any number of pixels along a run, so a background region needs about as
    many passes as its paths to the border have turns (a handful for a product shot).
    """
    reached = np.zeros_like(region)
    reached[0], reached[-1], reached[:, 0], reached[:, -1] = (
        region[0],
        region[-1],
        region[:, 0],
        region[:, -1],
    )
    row_runs = _run_labels(region)
    column_runs = _run_labels(region.T).T
    count = int(np.count_nonzero(reached))
    while True:
        for runs in (row_runs, column_runs):
            hit = np.zeros(int(runs.max()) + 1, dtype=bool)
            hit[runs[reached]] = True
            hit[0] = False
            reached = hit[runs]
        new_count = int(np.count_nonzero(reached))
        if new_count == count:
            return reached
        count = new_count


def _run_labels(region: np.ndarray) -> np.ndarray:
    """(h, w) int labels of the row runs of ``region`` (1, 2, ...; 0 outside the region)."""
    flat = np.ascontiguousarray(region).reshape(-1)
    starts = flat.copy()
    starts[1:] &= ~flat[:-1]
    # A run never continues onto the next row.
    starts.reshape(region.shape)[:, 0] = region[:, 0]
    labels = np.cumsum(starts, dtype=np.int64)
    labels[~flat] = 0
    return labels.reshape(region.shape)


# sRGB (0..255) -> linear light, and linear RGB -> XYZ scaled by the D65 white point.
_LINEAR = np.where(
    np.arange(256) / 255.0 <= 0.04045,
    np.arange(256) / 255.0 / 12.92,
    ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4,
).astype(np.float32)
_RGB_TO_XYZ = (
    np.asarray(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
        dtype=np.float32,
    )
    / np.asarray([0.9505, 1.0, 1.089], dtype=np.float32)[:, None]
)


def lab_statistics(pixels: np.ndarray) -> np.ndarray:
    """(6,) mean and std of (n, 3) uint8 sRGB pixels in CIE Lab, scaled like 8-bit Lab
    (L / 100, (a + 128) / 255, (b + 128) / 255)."""
    if len(pixels) == 0:
        return np.zeros(6, dtype=np.float32)
    xyz = _LINEAR[pixels] @ _RGB_TO_XYZ.T
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.stack(
        [
            (116.0 * f[:, 1] - 16.0) / 100.0,
            (500.0 * (f[:, 0] - f[:, 1]) + 128.0) / 255.0,
            (200.0 * (f[:, 1] - f[:, 2]) + 128.0) / 255.0,
        ],
        axis=1,
    )
    return np.concatenate([lab.mean(0), lab.std(0)]).astype(np.float32)


def colour_descriptor(image: Image.Image) -> np.ndarray:
    """(COLOUR_DIM,) float32: two Hellinger-normalised HSV histograms of the foreground, the
    coarse one (:data:`HISTOGRAM_DIM` columns, what the projection heads read) and the fine
    one, then its Lab mean and std (:func:`lab_statistics`)."""
    image = to_rgb(image)
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
    rgb = np.asarray(image, dtype=np.uint8)
    mask = foreground_mask(rgb)
    # PIL's HSV conversion (all channels 0..255) is several times faster than numpy's.
    hsv = np.asarray(image.convert("HSV"), dtype=np.uint8)[mask]
    hue = hsv[:, 0].astype(np.float32) / 256.0
    sat = hsv[:, 1].astype(np.float32) / 255.0
    val = hsv[:, 2].astype(np.float32) / 255.0
    return np.concatenate(
        [
            _histogram(hue, sat, val, COARSE),
            _histogram(hue, sat, val, FINE),
            lab_statistics(rgb[mask]),
        ]
    ).astype(np.float32)


def _histogram(
    hue: np.ndarray, sat: np.ndarray, val: np.ndarray, spec: HistogramSpec
) -> np.ndarray:
    """(spec.dim,) square root of the normalised histogram of foreground pixels."""
    chromatic = sat >= np.float32(spec.sat_edges[0])
    # Achromatic pixels: value bins only (black .. white).
    grey_bin = np.minimum((val * spec.grey_bins).astype(np.int64), spec.grey_bins - 1)
    # Chromatic pixels: hue (shifted half a bin so pure red sits mid-bin) x sat x val.
    h = ((hue + 0.5 / spec.hue_bins) % 1.0 * spec.hue_bins).astype(np.int64) % spec.hue_bins
    # Bin = how many edges lie at or below the value (searchsorted side="right", cheaper).
    s = sum((sat >= np.float32(edge)).astype(np.int64) for edge in spec.sat_edges[1:])
    v = sum((val >= np.float32(edge)).astype(np.int64) for edge in spec.val_edges)
    idx = np.where(
        chromatic,
        (h * len(spec.sat_edges) + s) * (len(spec.val_edges) + 1) + v,
        spec.grey_offset + grey_bin,
    )
    hist = np.bincount(idx, minlength=spec.dim).astype(np.float32)
    total = hist.sum()
    if total > 0:
        hist /= total
    return np.sqrt(hist)


def colour_descriptors(images: Sequence[Image.Image]) -> np.ndarray:
    """(n, COLOUR_DIM) float32 descriptors."""
    out = np.zeros((len(images), COLOUR_DIM), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = colour_descriptor(image)
    return out
