"""CLIP through sentence-transformers: texts and images in one shared space.

``ClipEncoder("clip-ViT-B-32")`` loads a hub model (from the local Hugging Face cache when
the hub is unreachable); ``ClipEncoder("/path/to/folder")`` loads a local folder, either a
saved sentence-transformers model or a plain transformers CLIP folder (``config.json``,
weights, tokenizer and image processor files), which sentence-transformers wraps itself.

``info.name`` must be the same every time the same model is used, because the store refuses
vectors written by another encoder name:

* hub id: ``clip:<organisation>/<model>``; a bare id is resolved the way
  sentence-transformers resolves it, so ``clip``, ``clip-ViT-B-32`` and
  ``clip:sentence-transformers/clip-ViT-B-32`` all give
  ``clip:sentence-transformers/clip-ViT-B-32``;
* local folder: ``clip:<folder name>@<12 hex digits>``, the digits fingerprinting the weight
  files' names, sizes and sampled bytes. The name survives moving or copying the folder (or
  using it on another machine) and differs for two different models in folders that happen
  to share a name; reading the samples costs a few MiB of I/O, not a pass over the weights.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from clipy_qdrant.encoders.base import EncoderInfo, l2_normalize
from clipy_qdrant.encoders.images import decode_image
from clipy_qdrant.errors import EncoderError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_CLIP_MODEL = "clip-ViT-B-32"
_HUB_ORGANISATION = "sentence-transformers"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx")
_FINGERPRINT_SAMPLE_BYTES = 1 << 20
_FINGERPRINT_HEX_DIGITS = 12


def _looks_like_path(model_name_or_path: str) -> bool:
    """A spec naming a folder rather than a hub id (``org/name`` or a bare ``name``)."""
    return (
        model_name_or_path.startswith(("/", ".", "~"))
        or model_name_or_path.count("/") > 1
        or (os.sep != "/" and os.sep in model_name_or_path)
        or os.path.exists(model_name_or_path)
    )


def _hub_id(model_id: str) -> str:
    """The hub id sentence-transformers will load for ``model_id`` (a bare name gets its org)."""
    if "/" in model_id:
        return model_id
    from sentence_transformers.util.misc import ORIGINAL_TRANSFORMER_MODELS

    if model_id.lower() in ORIGINAL_TRANSFORMER_MODELS:
        return model_id
    return f"{_HUB_ORGANISATION}/{model_id}"


def _folder_fingerprint(folder: Path) -> str:
    """A short hash of the folder's weight files: relative names, sizes and sampled bytes."""
    weight_files = sorted(
        file
        for file in folder.rglob("*")
        if file.is_file()
        and file.suffix in _WEIGHT_SUFFIXES
        and not any(part.startswith(".") for part in file.relative_to(folder).parts)
    )
    # A folder without weight files cannot load; hashing its file listing keeps this total.
    files = weight_files or sorted(file for file in folder.rglob("*") if file.is_file())
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(folder).as_posix()}\0{size}\0".encode())
        if not weight_files:
            continue
        with file.open("rb") as handle:
            # Start (header), middle and end: any retraining changes the tensors sampled here.
            for offset in (0, max(0, size // 2 - _FINGERPRINT_SAMPLE_BYTES // 2), size):
                handle.seek(max(0, min(offset, size - _FINGERPRINT_SAMPLE_BYTES)))
                digest.update(handle.read(_FINGERPRINT_SAMPLE_BYTES))
    return digest.hexdigest()[:_FINGERPRINT_HEX_DIGITS]


def clip_encoder_name(model_name_or_path: str) -> str:
    """The stable ``info.name`` for a CLIP hub id or local folder (see the module docstring)."""
    if _looks_like_path(model_name_or_path):
        folder = Path(model_name_or_path).expanduser().resolve()
        return f"clip:{folder.name}@{_folder_fingerprint(folder)}"
    return f"clip:{_hub_id(model_name_or_path)}"


class ClipEncoder:
    """A CLIP dual encoder loaded with sentence-transformers.

    >>> encoder = ClipEncoder("/models/clip-ViT-B-32")  # doctest: +SKIP
    >>> encoder.encode_texts(["red summer dress"]).shape  # doctest: +SKIP
    (1, 512)
    """

    #: No hubness correction unless asked: it is measured for fashion-mini only.
    default_hubness: float = 0.0
    #: A general-purpose model, not trained on any split of the catalog.
    trained_split: str | None = None

    def __init__(self, model_name_or_path: str = DEFAULT_CLIP_MODEL, device: str = "cpu") -> None:
        spec = model_name_or_path.strip()
        if not spec:
            raise EncoderError(
                "empty CLIP model name; pass a hub id or a local folder, e.g. --encoder clip:/path/to/model"
            )
        self._model = _load_model(spec, device)
        dim = self._model.get_embedding_dimension()
        if not dim:
            raise EncoderError(
                f"CLIP model {spec!r} does not report its embedding dimension; use a CLIP model with a projection layer"
            )
        self._info = EncoderInfo(name=clip_encoder_name(spec), dim=int(dim))

    @property
    def info(self) -> EncoderInfo:
        """Name (stable for the same model) and vector dimension."""
        return self._info

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, shape (len(texts), dim)."""
        if isinstance(texts, str):
            raise EncoderError(
                "encode_texts takes a list of texts, not one string; wrap it in a list"
            )
        bad = next((item for item in texts if not isinstance(item, str)), None)
        if bad is not None:
            raise EncoderError(
                f"encode_texts got a {type(bad).__name__}, not a str; pass texts only"
            )
        return self._encode(list(texts), batch_size)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Unit-length float32 vectors, shape (len(images), dim); images are turned upright and
        converted to RGB (:func:`~clipy_qdrant.encoders.images.decode_image`)."""
        bad = next((item for item in images if not isinstance(item, Image.Image)), None)
        if bad is not None:
            raise EncoderError(
                f"encode_images got a {type(bad).__name__}, not a PIL image; open files with PIL.Image.open first"
            )
        return self._encode([decode_image(image) for image in images], batch_size)

    def _encode(self, inputs: list[Any], batch_size: int) -> np.ndarray:
        if batch_size < 1:
            raise EncoderError(f"batch size must be at least 1, got {batch_size}")
        if not inputs:
            return np.zeros((0, self._info.dim), dtype=np.float32)
        vectors = self._model.encode(
            inputs,
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        # normalize_embeddings already did it; this pins the dtype and guards a zero row.
        return l2_normalize(np.asarray(vectors).reshape(len(inputs), self._info.dim))


def _load_model(spec: str, device: str) -> SentenceTransformer:
    """Load ``spec`` with sentence-transformers, turning every failure into one clear EncoderError."""
    from_hub = not _looks_like_path(spec)
    source = spec
    if not from_hub:
        folder = Path(spec).expanduser()
        if not folder.exists():
            raise EncoderError(
                f"cannot load CLIP model {spec!r}: no such folder; pass an existing model folder with --encoder clip:/path/to/model"
            )
        if not folder.is_dir():
            raise EncoderError(
                f"cannot load CLIP model {spec!r}: it is a file, not a folder; pass the folder that holds config.json"
            )
        source = str(folder.resolve())

    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(source, device=device)
    except OSError as exc:
        if from_hub and _hub_unreachable(exc):
            raise EncoderError(
                f"cannot load CLIP model {spec!r}: the model hub is unreachable and no local copy exists; "
                "pass a local path with --encoder clip:/path/to/model"
            ) from exc
        where = "the model hub" if from_hub else "that folder"
        raise EncoderError(
            f"cannot load CLIP model {spec!r} from {where}: {_first_line(exc)}; "
            "pass a CLIP hub id such as clip-ViT-B-32 or a folder holding a saved CLIP model"
        ) from exc
    except (ValueError, KeyError, TypeError, RuntimeError, ImportError) as exc:
        raise EncoderError(
            f"cannot load CLIP model {spec!r}: {_first_line(exc)}; "
            "pass a CLIP hub id such as clip-ViT-B-32 or a folder holding a saved CLIP model"
        ) from exc
    missing = [modality for modality in ("text", "image") if not model.supports(modality)]
    if missing:
        raise EncoderError(
            f"model {spec!r} is not a CLIP model: it cannot encode {' or '.join(missing)}; "
            "pass a text-image model such as clip-ViT-B-32"
        )
    return model


def _hub_unreachable(exc: BaseException) -> bool:
    """Whether a load failed for want of the network (offline mode or no connection), not a bad id."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, LocalEntryNotFoundError | OfflineModeIsEnabled | ConnectionError):
            return True
        if "couldn't connect" in str(cause).lower():
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
