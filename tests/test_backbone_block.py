"""The backbone block (clipy_qdrant/encoders/fashion/backbone_block.py): its fit, its place in
image and text vectors, and what it leaves unchanged (text→image ranking, models without it)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from corpus import image_bytes
from PIL import Image

from clipy_qdrant.encoders.base import l2_normalize
from clipy_qdrant.encoders.fashion.backbone_block import BackboneBlock, fit_backbone_block
from clipy_qdrant.encoders.fashion.model_dir import DEFAULT_MODEL_DIR, WEIGHTS_FILE
from clipy_qdrant.errors import ConfigError, EncoderError
from clipy_qdrant.training.config import TrainConfig


def _features(rows: int = 300, width: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A few strong directions plus noise, positive like pooled activations.
    basis = rng.standard_normal((6, width))
    return np.abs(rng.standard_normal((rows, 6)) @ basis + 0.3 * rng.standard_normal((rows, width)))


def test_the_block_is_whitened_principal_axes_of_the_normalised_features() -> None:
    x = _features()
    block = fit_backbone_block(x, 8, 0.2)
    r = ((l2_normalize(x) - block.centre) @ block.axes) / block.scale
    # Whitened: unit variance and no correlation between the axes on the fitted rows.
    np.testing.assert_allclose(np.cov(r, rowvar=False), np.eye(8), atol=1e-4)
    # Decreasing variance: the first axis explains the most.
    assert np.all(np.diff(block.scale) <= 1e-7)
    np.testing.assert_allclose(np.linalg.norm(block.block(x), axis=1), 1.0, atol=1e-5)


def test_the_fit_does_not_depend_on_row_order_or_eigenvector_signs() -> None:
    x = _features()
    a = fit_backbone_block(x, 8, 0.2)
    b = fit_backbone_block(x[::-1].copy(), 8, 0.2)
    np.testing.assert_allclose(a.axes, b.axes, atol=1e-4)
    np.testing.assert_allclose(a.scale, b.scale, rtol=1e-5)
    top = np.abs(a.axes).argmax(axis=0)
    assert np.all(a.axes[top, np.arange(8)] > 0)


def test_fewer_rows_than_features_give_the_covariances_axes_at_most_rows_minus_one() -> None:
    """The SVD path (rows <= width) gives the covariance eigenvectors' axes and scales."""
    x = _features(rows=40, width=48)
    block = fit_backbone_block(x, 8, 0.2)
    centred = l2_normalize(x).astype(np.float64) - block.centre
    values, vectors = np.linalg.eigh(centred.T @ centred / (len(x) - 1))
    np.testing.assert_allclose(block.scale, np.sqrt(values[::-1][:8]), rtol=1e-4)
    np.testing.assert_allclose(np.abs(block.axes), np.abs(vectors[:, ::-1][:, :8]), atol=1e-4)
    # Six centred rows span five directions: the block keeps five axes, not noise.
    few = fit_backbone_block(_features(rows=6, width=48), 8, 0.2)
    assert few.dim == 5 and few.config()["dim"] == 5
    assert np.all(few.scale > 1e-3)


def test_image_image_cosine_mixes_heads_and_block_and_text_ranking_is_unchanged() -> None:
    rng = np.random.default_rng(1)
    x = _features()
    block = fit_backbone_block(x, 8, 0.3)
    heads = l2_normalize(rng.standard_normal((len(x), 16)))
    texts = l2_normalize(rng.standard_normal((5, 16)))
    images = block.join(heads, x)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    r = block.block(x)
    np.testing.assert_allclose(images @ images.T, 0.7 * heads @ heads.T + 0.3 * r @ r.T, atol=1e-5)
    padded = block.pad(texts)
    assert padded.shape == (5, 16 + 8)
    scores = padded @ images.T
    np.testing.assert_allclose(scores, np.sqrt(0.7) * texts @ heads.T, atol=1e-5)
    assert (np.argsort(-scores, axis=1) == np.argsort(-(texts @ heads.T), axis=1)).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fit_backbone_block(_features(), 0, 0.2), r"dims must be in 1\.\.48"),
        (lambda: fit_backbone_block(_features(), 49, 0.2), r"dims must be in 1\.\.48"),
        (lambda: fit_backbone_block(_features(rows=1), 4, 0.2), "at least 2 products"),
        (lambda: fit_backbone_block(_features(), 4, 1.0), r"weight must be in \(0, 1\)"),
        (
            lambda: BackboneBlock(np.zeros(3), np.zeros((4, 2)), np.ones(2), 0.2),
            "tensors disagree",
        ),
    ],
)
def test_bad_blocks_are_refused(call, message: str) -> None:
    with pytest.raises(EncoderError, match=message):
        call()


@pytest.mark.parametrize("changes", [{"backbone_block": -1}, {"backbone_block_weight": 0.0}])
def test_train_config_refuses_a_block_that_cannot_be_fitted(changes: dict) -> None:
    with pytest.raises(ConfigError, match="the backbone block needs"):
        TrainConfig(**changes)


def _without_block(tmp_path: Path) -> Path:
    """A copy of the shipped model folder without its backbone block: its heads alone."""
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "heads-only"
    if folder.exists():
        return folder
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    config = json.loads((folder / "config.json").read_text())
    block = config.pop("backbone_block")
    config["dim"] -= block["dim"]
    tensors = load_file(str(folder / WEIGHTS_FILE))
    save_file({k: v for k, v in tensors.items() if not k.startswith("backbone_block.")},
              str(folder / WEIGHTS_FILE))  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _with_block(tmp_path: Path, dims: int = 8) -> tuple[Path, BackboneBlock]:
    """The shipped heads with another block appended (fitted on random features of the
    backbone's width)."""
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "with-block"
    shutil.copytree(_without_block(tmp_path), folder)
    config = json.loads((folder / "config.json").read_text())
    block = fit_backbone_block(
        _features(rows=200, width=int(config["image_feature_dim"])), dims, 0.2
    )
    tensors = {**load_file(str(folder / WEIGHTS_FILE)), **block.tensors()}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    config["backbone_block"] = block.config()
    config["dim"] += dims
    (folder / "config.json").write_text(json.dumps(config))
    return folder, block


def test_the_shipped_model_is_its_heads_with_a_256_dim_block() -> None:
    from clipy_qdrant.encoders import get_encoder

    shipped = get_encoder("fashion-mini")
    block = shipped.heads.backbone_block  # type: ignore[attr-defined]
    assert block is not None and block.dim == 256 and block.weight == pytest.approx(0.1)
    assert shipped.info.dim == 568 + 256


def test_the_shipped_heads_without_the_block_are_the_previous_model(tmp_path: Path) -> None:
    """The block is fitted after the heads and changes none of them: without it the shipped
    files are fashion-mini@98566b465981, byte for byte (CHANGELOG.md)."""
    from clipy_qdrant.encoders import get_encoder

    heads_only = get_encoder(f"fashion-mini:{_without_block(tmp_path)}")
    assert heads_only.info.dim == 568
    assert heads_only.info.name.rpartition("@")[2] == "98566b465981"


def test_a_model_with_a_block_encodes_wider_vectors_under_its_own_name(tmp_path: Path) -> None:
    import io

    from clipy_qdrant.encoders import get_encoder

    sample_images = [
        Image.open(io.BytesIO(image_bytes(rgb, size=(60, 80))))
        for rgb in [(200, 30, 30), (20, 20, 20), (30, 60, 200), (240, 240, 235)]
    ]

    shipped = get_encoder(f"fashion-mini:{_without_block(tmp_path)}")
    folder, block = _with_block(tmp_path)
    blocked = get_encoder(f"fashion-mini:{folder}")
    assert blocked.info.dim == shipped.info.dim + block.dim
    assert blocked.info.name.rpartition("@")[2] != shipped.info.name.rpartition("@")[2]
    images = blocked.encode_images(sample_images)
    plain = shipped.encode_images(sample_images)
    np.testing.assert_allclose(images[:, : shipped.info.dim], np.sqrt(0.8) * plain, atol=1e-5)
    texts = ["red dress", "men black formal shoes", "blue jeans"]
    text_vectors = blocked.encode_texts(texts)
    assert not text_vectors[:, shipped.info.dim :].any()
    np.testing.assert_allclose(
        text_vectors @ images.T, np.sqrt(0.8) * shipped.encode_texts(texts) @ plain.T, atol=1e-5
    )
    # Without the block's config entry the same heads are the shipped model's name and dims.
    without = dataclasses.replace(blocked.heads, backbone_block=None)  # type: ignore[attr-defined]
    assert without.dim == shipped.info.dim


def test_a_block_entry_without_its_tensors_is_a_clear_error(tmp_path: Path) -> None:
    from clipy_qdrant.encoders import get_encoder

    folder = tmp_path / "broken"
    shutil.copytree(_without_block(tmp_path), folder)
    config = json.loads((folder / "config.json").read_text())
    config["backbone_block"] = {"dim": 8, "weight": 0.2, "whitened": True}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError, match=r"backbone block lacks 'backbone_block\.centre'"):
        get_encoder(f"fashion-mini:{folder}")
