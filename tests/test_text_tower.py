"""The MiniLM text tower: ONNX Runtime export vs the sentence-transformers model it replaces."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clipy_qdrant.encoders.fashion.towers import TEXT_FEATURE_DIM, TEXT_MAX_TOKENS, TextTower

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5  # max abs difference the shipped heads and golden tests can live with

LONG_TEXT = " ".join(["Embroidered cotton kurta with mirror work and contrast piping"] * 40)
CASES = {
    "one word": ["red"],
    "short query": ["men's red casual shoes"],
    "product names": [
        "Puma Men Grey T-shirt",
        "Nike Men Blue Running Shoes Air Zoom Pegasus 37",
        "Fastrack Women Black Dial Watch NE9827PP01",
    ],
    "truncated long text": [LONG_TEXT],
    "unicode and accents": ["Café crème écharpe für Damen — naïve façade ☕ 日本語 тест"],
    "empty string": [""],
    "whitespace only": ["   "],
    "mixed-length batch": [
        "red",
        LONG_TEXT,
        "",
        "women's black leather handbag with gold zip",
        "Watches",
        "  padded  ",
        "Café",
    ],
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("text-tower-cache")


@pytest.fixture(scope="module")
def onnx_tower(cache_dir: Path) -> TextTower:
    tower = TextTower(runtime="onnx", cache_dir=cache_dir)
    tower.export_onnx()  # once for the module
    return tower


@pytest.fixture(scope="module")
def torch_tower(cache_dir: Path) -> TextTower:
    return TextTower(runtime="torch", cache_dir=cache_dir)


def test_empty_input_gives_an_empty_matrix(tmp_path: Path) -> None:
    for runtime in ("onnx", "torch"):
        out = TextTower(runtime=runtime, cache_dir=tmp_path).features([])
        assert out.shape == (0, TEXT_FEATURE_DIM)
        assert out.dtype == np.float32
    assert not (tmp_path / "onnx").exists(), "an empty input must not trigger the export"


def test_unknown_runtime_is_refused(tmp_path: Path) -> None:
    from clipy_qdrant.errors import EncoderError

    with pytest.raises(EncoderError, match="unknown text runtime"):
        TextTower(runtime="tensorrt", cache_dir=tmp_path)


@pytest.mark.slow
def test_long_texts_are_truncated_like_sentence_transformers(onnx_tower: TextTower) -> None:
    assert len(onnx_tower.tokenizer().encode(LONG_TEXT).ids) == TEXT_MAX_TOKENS
    assert onnx_tower.tokenizer().encode("").ids == [101, 102]  # [CLS] [SEP]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_matches_sentence_transformers(
    case: str, onnx_tower: TextTower, torch_tower: TextTower
) -> None:
    texts = CASES[case]
    onnx_out = onnx_tower.features(texts)
    torch_out = torch_tower.features(texts)
    assert onnx_out.shape == torch_out.shape == (len(texts), TEXT_FEATURE_DIM)
    assert onnx_out.dtype == np.float32
    assert np.abs(onnx_out - torch_out).max() <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(onnx_out, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_length_sorted_batches_keep_the_input_order(onnx_tower: TextTower) -> None:
    texts = [t for case in sorted(CASES) for t in CASES[case]]
    one_by_one = np.concatenate([onnx_tower.features([t]) for t in texts])
    for batch_size in (1, 3, 64):
        batched = onnx_tower.features(texts, batch_size=batch_size)
        assert np.abs(batched - one_by_one).max() <= TOLERANCE


_CHILD = textwrap.dedent(
    """
    import sys
    from clipy_qdrant.encoders.fashion.towers import TextTower

    tower = TextTower(runtime="onnx", cache_dir=sys.argv[1])
    out = tower.features(["men's red casual shoes", "Puma Men Grey T-shirt"])
    print(out.shape[0], out.shape[1])
    for name in ("sentence_transformers", "transformers", "torch"):
        print(name, name in sys.modules)
    """
)


@pytest.mark.slow
def test_cached_export_serves_a_fresh_process_without_torch(
    onnx_tower: TextTower, cache_dir: Path
) -> None:
    path = onnx_tower.onnx_path()
    assert path.is_file()
    assert path.parent == cache_dir / "onnx"
    assert path.name.startswith("minilm-l6-v2-")
    stamp = path.stat().st_mtime_ns
    files = sorted(p.name for p in path.parent.iterdir())

    # A second tower in this process reuses the file...
    again = TextTower(runtime="onnx", cache_dir=cache_dir)
    assert again.export_onnx() == path
    assert again.features(["red"]).shape == (1, TEXT_FEATURE_DIM)

    # ...and so does a fresh process, importing neither torch nor (sentence-)transformers.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == f"2 {TEXT_FEATURE_DIM}"
    assert "sentence_transformers False" in lines
    assert "transformers False" in lines
    assert "torch False" in lines

    assert path.stat().st_mtime_ns == stamp, "the export was written again"
    assert sorted(p.name for p in path.parent.iterdir()) == files
