"""A ``fashion-mini`` model folder: its files, its config, and the name that fingerprints it.

A folder holds ``config.json`` (towers, block weights, classes), ``heads.safetensors`` (the
trained heads) and, when the text head reads a word bag, its vocabulary file. The shipped
folder is package data at ``clipy_qdrant/models/fashion-mini``; ``clipy train`` writes others.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.encoders.fashion.backbone_block import CONFIG_KEY as BLOCK_CONFIG_KEY
from clipy_qdrant.encoders.fashion.heads import WordBag
from clipy_qdrant.errors import EncoderError

ENCODER_NAME = "fashion-mini"
#: The model folder shipped inside the package.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "fashion-mini"
WEIGHTS_FILE = "heads.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
#: config.json entries that shape the vectors besides the heads (part of the fingerprint).
VECTOR_CONFIG_KEYS = (
    "backbone",
    "resolution",
    "image_pooling",
    "colour_spec",
    "appearance_weight",
    "colour_block",
    "type_block",
)
#: Shaping entries that count only where a model has them: a model without one has the
#: fingerprint of a config that lacks the entry.
OPTIONAL_VECTOR_CONFIG_KEYS = (BLOCK_CONFIG_KEY,)
_FINGERPRINT_SUFFIX = re.compile(r"@[0-9a-f]{6,64}$")
_FINGERPRINT_HEX_DIGITS = 12


def read_model_dir(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The folder's config and head tensors, or an EncoderError saying what is missing."""
    config_path = path / CONFIG_FILE
    weights_path = path / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise EncoderError(
            f"no fashion-mini model at {path} (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "train one with `clipy train CATALOG --out DIR`"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise EncoderError(f"unreadable {config_path}: {exc}") from exc
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:
        raise EncoderError(f"unreadable {weights_path}: {exc}") from exc
    return config, tensors


def read_word_bag(path: Path, config: dict[str, Any]) -> WordBag | None:
    """The model's word bag (``config["text_vocab"]`` names its file), or None."""
    name = config.get("text_vocab")
    if not name:
        return None
    try:
        words = (path / str(name)).read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise EncoderError(f"model at {path} lacks its vocabulary file {name}: {exc}") from exc
    return WordBag([w for w in words if w])


def model_name(
    path: Path,
    config: dict[str, Any],
    word_bag: WordBag | None,
    cache_dir: Path | None = None,
) -> str:
    """``fashion-mini@<fp>`` (the shipped folder) or ``fashion-mini:<folder>@<fp>``.

    The fingerprint (of the heads file, the word bag and the config entries that shape the
    vectors: block weights, temperature, towers) changes whenever the vectors would, so a
    store written with other heads refuses this model instead of mixing incompatible vectors;
    ``get_encoder`` accepts the name back as a spec.

    With a ``cache_dir`` the fingerprint is kept under ``cache_dir/fingerprints``, keyed by the
    heads file's path, size and modification time and by the word bag and config: a process
    that loads the model again reads it back instead of hashing the heads file (26 MB).
    """
    rest = hashlib.sha256()
    if word_bag is not None:
        rest.update("\n".join(word_bag.vocab).encode())
    shaping = {key: config.get(key) for key in VECTOR_CONFIG_KEYS}
    shaping.update({key: config[key] for key in OPTIONAL_VECTOR_CONFIG_KEYS if config.get(key)})
    rest.update(json.dumps(shaping, sort_keys=True).encode())
    weights = path / WEIGHTS_FILE
    cached = None
    if cache_dir is not None:
        stat = weights.stat()
        key = f"{weights.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{rest.hexdigest()}"
        cached = cache_dir / "fingerprints" / hashlib.sha1(key.encode()).hexdigest()
    digest = _read_fingerprint(cached)
    if digest is None:
        sha = hashlib.sha256(weights.read_bytes())
        if word_bag is not None:
            sha.update("\n".join(word_bag.vocab).encode())
        sha.update(json.dumps(shaping, sort_keys=True).encode())
        digest = sha.hexdigest()[:_FINGERPRINT_HEX_DIGITS]
        _write_fingerprint(cached, digest)
    if path.resolve() == DEFAULT_MODEL_DIR.resolve():
        return f"{ENCODER_NAME}@{digest}"
    return f"{ENCODER_NAME}:{path.resolve()}@{digest}"


def _read_fingerprint(path: Path | None) -> str | None:
    """A cached fingerprint, or None when there is none (or it is not one)."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    ok = len(text) == _FINGERPRINT_HEX_DIGITS and all(c in "0123456789abcdef" for c in text)
    return text if ok else None


def _write_fingerprint(path: Path | None, digest: str) -> None:
    """Cache ``digest`` at ``path`` (temp file + rename; a read-only cache is skipped)."""
    if path is None:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(digest, encoding="ascii")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def strip_fingerprint(path: str) -> str:
    """``path`` without a trailing ``@<fingerprint>`` (as in a stored encoder name)."""
    return _FINGERPRINT_SUFFIX.sub("", path)
