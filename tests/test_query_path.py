"""The query path of the shipped encoder: what a one-shot ``clipy search`` loads, and the
shortcuts it takes (only the command's module, only the text-side heads, a cached model
fingerprint, one BLAS thread for a query) without changing a vector."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipy_qdrant.encoders.fashion import FashionEncoder
from clipy_qdrant.encoders.fashion.model_dir import (
    DEFAULT_MODEL_DIR,
    model_name,
    read_model_dir,
    read_word_bag,
)

REPO = Path(__file__).resolve().parent.parent
#: Libraries and clipy modules a one-shot text query has no use for.
NOT_ON_THE_QUERY_PATH = (
    "torch",
    "sentence_transformers",
    "transformers",
    "datasets",
    "pyarrow",
    "pandas",
    "scipy",
    "sklearn",
    "faiss",
    "matplotlib",
    "qdrant_client",
    "clipy_qdrant.training",
    "clipy_qdrant.eval",
    "ingest.cli.train",
    "ingest.cli.eval",
    "ingest.cli.serve",
)
COLOURS = {"Red": (220, 20, 20), "Blue": (20, 40, 220), "Black": (5, 5, 5)}
TYPES = ["Tshirts", "Shoes", "Watches", "Jeans"]

#: Runs ``clipy ARGS`` through the console-script entry point, then reports which of the
#: modules it names were imported.
PROBE = """
import json, sys
from ingest.cli import main
watched, sys.argv = json.loads(sys.argv[1]), ["clipy", *sys.argv[2:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print("LOADED=" + json.dumps([m for m in watched if m in sys.modules]), file=sys.stderr)
sys.exit(code)
"""


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.fixture(scope="module")
def fashion_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 36-product catalog (CSV + JPEG files) ingested with the shipped fashion-mini."""
    root = tmp_path_factory.mktemp("catalog")
    (root / "images").mkdir()
    rows = []
    for n in range(36):
        name, article = list(COLOURS)[n % len(COLOURS)], TYPES[n // len(COLOURS) % len(TYPES)]
        pid = 1000 + n
        image = Image.new("RGB", (60, 80), (255, 255, 255))
        image.paste(Image.new("RGB", (40, 50), COLOURS[name]), (10, 15))
        image.save(root / "images" / f"{pid}.jpg", "JPEG")
        rows.append(
            {
                "id": pid,
                "articleType": article,
                "baseColour": name,
                "productDisplayName": f"{name} {article} {n}",
                "image": f"{pid}.jpg",
            }
        )
    with (root / "styles.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    store = tmp_path_factory.mktemp("store") / "data"
    args = ["ingest", str(root / "styles.csv"), "--images", str(root / "images")]
    args += ["--store", str(store), "--encoder", "fashion-mini"]
    args += ["--report", str(store.parent / "report.json")]
    result = subprocess.run(
        [sys.executable, "-m", "ingest.cli", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return store


def run_probe(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(NOT_ON_THE_QUERY_PATH), *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next(x for x in result.stderr.splitlines() if x.startswith("LOADED="))
    return result, json.loads(line.removeprefix("LOADED="))


@pytest.mark.slow
def test_one_shot_text_search_imports_no_model_training_or_table_library(
    fashion_store: Path,
) -> None:
    result, loaded = run_probe("search", "red shoes", "--json", "--store", str(fashion_store))
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert hits and all(hit["payload"]["baseColour"] == "Red" for hit in hits[:3])
    assert loaded == []


@pytest.mark.slow
def test_the_probe_sees_a_module_that_a_command_imports(fashion_store: Path) -> None:
    """The probe is no rubber stamp: ``clipy --help`` registers every command, and the
    eval and training modules come with it."""
    result, loaded = run_probe("--help")
    assert result.returncode == 0, result.stderr
    assert {"ingest.cli.eval", "ingest.cli.train", "clipy_qdrant.training"} <= set(loaded)


@pytest.mark.slow
def test_a_text_query_converts_no_image_head_and_opens_no_image_session() -> None:
    encoder = FashionEncoder()
    image_side = [encoder.heads.image, encoder.heads.colour.image]  # type: ignore[union-attr]
    encoder.encode_texts(["red shoes"])
    assert all(head._float32 is None for head in image_side)
    assert encoder.image_tower._session is None
    assert encoder.heads.text._float32 is not None


@pytest.mark.slow
def test_one_query_gets_the_vectors_of_a_batch() -> None:
    """A query (one BLAS thread) and a batch large enough to run multi-threaded agree."""
    encoder = FashionEncoder()
    texts = [f"{colour} {article}" for colour in COLOURS for article in TYPES] * 2
    batch = encoder.encode_texts(texts)
    singles = np.concatenate([encoder.encode_texts([text]) for text in texts[:4]])
    np.testing.assert_allclose(singles, batch[:4], atol=1e-6)
    images = [Image.new("RGB", (60, 80), rgb) for rgb in COLOURS.values()] * 6
    image_batch = encoder.encode_images(images)
    image_single = encoder.encode_images(images[:1])
    np.testing.assert_allclose(image_single, image_batch[:1], atol=1e-6)


def test_cached_fingerprint_is_the_hashed_one_and_follows_the_heads_file(tmp_path: Path) -> None:
    config, _ = read_model_dir(DEFAULT_MODEL_DIR)
    bag = read_word_bag(DEFAULT_MODEL_DIR, config)
    hashed = model_name(DEFAULT_MODEL_DIR, config, bag)
    assert model_name(DEFAULT_MODEL_DIR, config, bag, tmp_path) == hashed  # written
    assert len(list((tmp_path / "fingerprints").iterdir())) == 1
    assert model_name(DEFAULT_MODEL_DIR, config, bag, tmp_path) == hashed  # read back

    # A copy of the folder whose heads file then changes gets a new fingerprint.
    copy = tmp_path / "model"
    copy.mkdir()
    for item in DEFAULT_MODEL_DIR.iterdir():
        if item.is_file():
            (copy / item.name).write_bytes(item.read_bytes())
    before = model_name(copy, config, bag, tmp_path)
    weights = copy / "heads.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    after = model_name(copy, config, bag, tmp_path)
    assert after != before
    assert after == model_name(copy, config, bag)

    # A corrupt cache entry is ignored and rewritten.
    for entry in (tmp_path / "fingerprints").iterdir():
        entry.write_text("not a fingerprint")
    assert model_name(DEFAULT_MODEL_DIR, config, bag, tmp_path) == hashed


def test_overlapping_query_blocks_restore_the_blas_threads_they_found() -> None:
    """Two queries' blocks that overlap (a server's threads): the first one out leaves the
    cap on for the other, the last one out restores the count found before either."""
    from threadpoolctl import threadpool_limits

    from clipy_qdrant.encoders.blas import _blas_controller, blas_threads_for

    def blas_threads() -> set[int]:
        # The libraries the module controls (a BLAS another test loads later is not among them).
        return {lib.num_threads for lib in _blas_controller().lib_controllers}

    with threadpool_limits(limits=2, user_api="blas"):
        assert blas_threads() == {2}
        first, second = blas_threads_for(1), blas_threads_for(3)
        first.__enter__()
        second.__enter__()
        assert blas_threads() == {1}
        first.__exit__(None, None, None)
        assert blas_threads() == {1}
        second.__exit__(None, None, None)
        assert blas_threads() == {2}
        with blas_threads_for(64):  # a batch keeps every thread
            assert blas_threads() == {2}


def test_one_blas_thread_caps_the_process_for_good() -> None:
    """``clipy serve``'s cap: one BLAS thread from then on, query blocks leave it on, and the
    products give the same numbers as with every thread (run in a child process: the cap is
    process-wide and permanent)."""
    code = """
import numpy as np
from threadpoolctl import threadpool_limits
from clipy_qdrant.encoders.blas import _blas_controller, blas_threads_for, one_blas_thread

def threads():
    return {lib.num_threads for lib in _blas_controller().lib_controllers}

rng = np.random.default_rng(0)
a, b = rng.standard_normal((64, 300)), rng.standard_normal((300, 200))
with threadpool_limits(limits=2, user_api="blas"):
    wide = a @ b
assert one_blas_thread() and threads() == {1}, threads()
with blas_threads_for(1):
    assert threads() == {1}
assert threads() == {1}
assert one_blas_thread() and threads() == {1}
np.testing.assert_allclose(a @ b, wide, rtol=1e-12, atol=1e-12)
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
