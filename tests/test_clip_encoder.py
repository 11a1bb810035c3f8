"""ClipEncoder against a tiny real CLIP built offline (random weights, real loading code)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_clip import TINY_CLIP_PROJECTION_DIM, build_tiny_clip

from clipy_qdrant.encoders import Encoder, get_encoder
from clipy_qdrant.encoders.clip import ClipEncoder, clip_encoder_name
from clipy_qdrant.errors import EncoderError

pytestmark = pytest.mark.slow

TEXTS = ["red summer dress", "blue denim jeans", "black leather boots", "a", "white t-shirt 2"]


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "tiny-clip")


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder(str(tiny_clip_dir))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real PNG/JPEG files of different modes and sizes, written and read back with PIL."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, size=(80, 60, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(folder / "noise.png")
    Image.new("RGB", (60, 80), (200, 30, 30)).save(folder / "red.jpg")
    Image.fromarray(noise[:, :, 0], "L").save(folder / "gray.png")
    rgba = np.dstack([noise, np.full((80, 60), 128, dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "half-transparent.png")
    return folder


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def _assert_contract(vectors: np.ndarray, rows: int, dim: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (rows, dim)
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_loads_a_plain_transformers_clip_folder(encoder: ClipEncoder) -> None:
    assert isinstance(encoder, Encoder)
    assert encoder.info.dim == TINY_CLIP_PROJECTION_DIM
    assert encoder.info.name.startswith("clip:tiny-clip@")


def test_registry_builds_the_same_encoder(tiny_clip_dir: Path, encoder: ClipEncoder) -> None:
    via_registry = get_encoder(f"clip:{tiny_clip_dir}")
    assert isinstance(via_registry, ClipEncoder)
    assert via_registry.info == encoder.info
    np.testing.assert_array_equal(via_registry.encode_texts(TEXTS), encoder.encode_texts(TEXTS))


def test_texts_meet_the_contract(encoder: ClipEncoder) -> None:
    _assert_contract(encoder.encode_texts(TEXTS), len(TEXTS), encoder.info.dim)


def test_different_texts_give_different_vectors(encoder: ClipEncoder) -> None:
    vectors = encoder.encode_texts(["red summer dress", "black leather boots"])
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)


def test_images_of_every_mode_meet_the_contract(encoder: ClipEncoder, image_dir: Path) -> None:
    images = [_open(path) for path in sorted(image_dir.iterdir())]
    assert {image.mode for image in images} == {"RGB", "L", "RGBA"}
    _assert_contract(encoder.encode_images(images), len(images), encoder.info.dim)


def test_grayscale_is_encoded_as_its_rgb_conversion(encoder: ClipEncoder, image_dir: Path) -> None:
    gray = _open(image_dir / "gray.png")
    from_gray = encoder.encode_images([gray])
    from_rgb = encoder.encode_images([gray.convert("RGB")])
    np.testing.assert_allclose(from_gray, from_rgb, atol=1e-6)


def test_transparency_is_flattened_onto_white(encoder: ClipEncoder) -> None:
    transparent = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    white = Image.new("RGB", (40, 40), (255, 255, 255))
    black = Image.new("RGB", (40, 40), (0, 0, 0))
    vectors = encoder.encode_images([transparent, white, black])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert not np.allclose(vectors[0], vectors[2], atol=1e-3)


def test_text_and_image_vectors_share_one_space(encoder: ClipEncoder, image_dir: Path) -> None:
    text_vectors = encoder.encode_texts(["red"])
    image_vectors = encoder.encode_images([_open(image_dir / "red.jpg")])
    assert text_vectors.shape[1] == image_vectors.shape[1] == encoder.info.dim


def test_encoding_is_deterministic(encoder: ClipEncoder, image_dir: Path) -> None:
    images = [_open(path) for path in sorted(image_dir.iterdir())]
    np.testing.assert_array_equal(encoder.encode_texts(TEXTS), encoder.encode_texts(TEXTS))
    np.testing.assert_array_equal(encoder.encode_images(images), encoder.encode_images(images))


def test_a_rebuilt_model_gives_the_same_vectors_and_name(
    tmp_path: Path, tiny_clip_dir: Path, encoder: ClipEncoder
) -> None:
    rebuilt = ClipEncoder(str(build_tiny_clip(tmp_path / "tiny-clip")))
    assert rebuilt.info == encoder.info
    np.testing.assert_allclose(rebuilt.encode_texts(TEXTS), encoder.encode_texts(TEXTS), atol=1e-6)


def test_batches_equal_one_at_a_time(encoder: ClipEncoder, image_dir: Path) -> None:
    images = [_open(path) for path in sorted(image_dir.iterdir())]
    batched_texts = encoder.encode_texts(TEXTS, batch_size=3)
    single_texts = np.vstack([encoder.encode_texts([text], batch_size=1) for text in TEXTS])
    np.testing.assert_allclose(batched_texts, single_texts, atol=1e-5)
    batched_images = encoder.encode_images(images, batch_size=3)
    single_images = np.vstack([encoder.encode_images([image]) for image in images])
    np.testing.assert_allclose(batched_images, single_images, atol=1e-5)


def test_empty_input_gives_zero_rows(encoder: ClipEncoder) -> None:
    assert encoder.encode_texts([]).shape == (0, encoder.info.dim)
    assert encoder.encode_images([]).shape == (0, encoder.info.dim)
    assert encoder.encode_texts([]).dtype == np.float32


def test_wrong_inputs_raise_encoder_error(encoder: ClipEncoder) -> None:
    with pytest.raises(EncoderError, match="list of texts"):
        encoder.encode_texts("one string")
    with pytest.raises(EncoderError, match="not a PIL image"):
        encoder.encode_images(["photo.jpg"])  # type: ignore[list-item]
    with pytest.raises(EncoderError, match="batch size"):
        encoder.encode_texts(TEXTS, batch_size=0)


def test_name_is_stable_across_moves_and_differs_between_models(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    moved = tmp_path / "elsewhere" / tiny_clip_dir.name
    shutil.copytree(tiny_clip_dir, moved)
    assert clip_encoder_name(str(moved)) == clip_encoder_name(str(tiny_clip_dir))
    # Same folder name, different weights: the name must differ.
    weights = moved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert clip_encoder_name(str(moved)) != clip_encoder_name(str(tiny_clip_dir))


def test_hub_ids_name_the_model_they_resolve_to() -> None:
    expected = "clip:sentence-transformers/clip-ViT-B-32"
    assert clip_encoder_name("clip-ViT-B-32") == expected
    assert clip_encoder_name("sentence-transformers/clip-ViT-B-32") == expected


def test_unreachable_hub_id_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError) as caught:
        get_encoder("clip-no-such-model-for-clipy-tests")
    message = str(caught.value)
    assert "\n" not in message
    assert "hub is unreachable" in message
    assert "--encoder clip:/path/to/model" in message


def test_missing_folder_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="no such folder") as caught:
        ClipEncoder(str(tmp_path / "missing"))
    assert "\n" not in str(caught.value)


def test_folder_without_a_model_raises_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    with pytest.raises(EncoderError, match="cannot load CLIP model") as caught:
        ClipEncoder(str(tmp_path))
    assert "\n" not in str(caught.value)


def test_a_file_instead_of_a_folder_raises_a_clear_error(tiny_clip_dir: Path) -> None:
    with pytest.raises(EncoderError, match="not a folder"):
        ClipEncoder(str(tiny_clip_dir / "config.json"))
