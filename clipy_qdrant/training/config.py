"""``TrainConfig``: every setting of a ``fashion-mini`` training run and its default, in one place.

The command line (``clipy train``) generates its options from these fields: each field's
``metadata`` carries its help text and whether the option is a common one (the others are
grouped as advanced). :meth:`TrainConfig.settings` is the ``settings`` block of the written
model's ``config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from clipy_qdrant.encoders.fashion.towers import DEFAULT_BACKBONE
from clipy_qdrant.errors import ConfigError

#: Image input of the shipped model: 160 px with three poolings (MODEL_CARD.md, "Image tower").
MODEL_RESOLUTION = 160
MODEL_POOLING = "gap,gmp,mid"

#: Weights of the colour block in image and text vectors. A colour query's score adds their
#: product (0.75) × sqrt(P(colour | image)); two images add the image weight squared (0.5) ×
#: the agreement of their colour distributions (MODEL_CARD.md, "Colour heads").
COLOUR_IMAGE_WEIGHT = 0.5**0.5
COLOUR_TEXT_WEIGHT = 0.75 / COLOUR_IMAGE_WEIGHT

#: Colour heads merge this many seeds' heads (one head whose logits are their mean), with this
#: many hidden units per image member, the merged hidden layer cut to this rank
#: (MODEL_CARD.md, "Colour heads").
COLOUR_SEEDS = 3
COLOUR_HIDDEN = 512
COLOUR_RANK = 384

#: The image-only articleType block: linear members merged, weight in image vectors, logit
#: temperature; chosen on validation folds 1 and 2 (MODEL_CARD.md, "Type block").
TYPE_SEEDS = 3
TYPE_HIDDEN = 0
TYPE_WEIGHT = 1.25
TYPE_TEMPERATURE = 0.5

#: Whitened principal axes of the raw backbone features in the image vector, and their share
#: of its square norm, chosen on validation fold 1 (docs/experiments.md, "At full scale (fold
#: 1, whole catalog)"): 0.1 keeps image→image type + colour P@10 within 0.015 of the heads
#: alone on near-copy queries, where 0.2 loses up to 0.027 for a larger known-item lift.
BACKBONE_BLOCK = 256
BACKBONE_BLOCK_WEIGHT = 0.1


def _opt(help: str, *, common: bool = False, minimum: float | None = None) -> dict[str, Any]:
    return {"help": help, "common": common, "min": minimum}


#: Fields of :class:`TrainConfig` that are run options, not part of the model's ``settings``.
RUN_FIELDS = ("epochs", "seed", "evaluate", "evaluate_untrained", "appearance_sweep")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run; the defaults train the shipped ``fashion-mini`` heads."""

    epochs: int = field(default=20, metadata=_opt("Training epochs.", common=True, minimum=1))
    seed: int = field(default=0, metadata=_opt("Random seed.", common=True))
    dim: int = field(default=256, metadata=_opt("Shared text/image dimensions.", minimum=1))
    hidden: int = field(
        default=1024, metadata=_opt("Hidden units of the projection heads (0: linear).", minimum=0)
    )
    text_hidden: int | None = field(
        default=None, metadata=_opt("Hidden units of the text head (default: --hidden).")
    )
    batch_size: int = field(default=1024, metadata=_opt("Contrastive batch size.", minimum=2))
    lr: float = field(default=2e-3, metadata=_opt("Peak learning rate (one-cycle schedule)."))
    weight_decay: float = field(default=0.05, metadata=_opt("AdamW weight decay."))
    name_weight: float = field(
        default=0.75,
        metadata=_opt("Probability that an image's caption is its name, not an attribute phrase."),
    )
    augment: bool = field(
        default=True, metadata=_opt("Attribute phrases as extra captions ('men's red shoes').")
    )
    hard_negative_groups: int = field(
        default=0, metadata=_opt("Blocks of one articleType per batch (0: random batches).")
    )
    image_label_weight: float = field(
        default=0.0, metadata=_opt("Weight of a supervised image-image term (type and colour).")
    )
    appearance_dim: int = field(
        default=128, metadata=_opt("Dimensions of the image-only appearance head (0: none).")
    )
    appearance_weight: float = field(
        default=2.0, metadata=_opt("Weight of the appearance block in image vectors.")
    )
    input_dropout: float = field(
        default=0.1, metadata=_opt("Input dropout of the image and appearance heads.")
    )
    word_bag_min_count: int = field(
        default=3, metadata=_opt("Word-bag words appear in at least this many captions (0: none).")
    )
    attribute_weight: float = field(
        default=0.0, metadata=_opt("Weight of the CLIP loss against colour and type names.")
    )
    phrase_positives: bool = field(
        default=False,
        metadata=_opt("Every image is a positive of each batch caption that is one of its own."),
    )
    colour_heads: bool = field(default=True, metadata=_opt("Train the colour heads."))
    colour_image_weight: float = field(
        default=COLOUR_IMAGE_WEIGHT, metadata=_opt("Weight of the colour block in image vectors.")
    )
    colour_text_weight: float = field(
        default=COLOUR_TEXT_WEIGHT, metadata=_opt("Weight of the colour block in text vectors.")
    )
    colour_seeds: int = field(
        default=COLOUR_SEEDS, metadata=_opt("Colour heads merged from this many seeds.", minimum=1)
    )
    colour_hidden: int = field(
        default=COLOUR_HIDDEN,
        metadata=_opt("Hidden units of each image colour head (0: linear).", minimum=0),
    )
    colour_rank: int = field(
        default=COLOUR_RANK,
        metadata=_opt("Rank of the merged image colour hidden layer (0: whole).", minimum=0),
    )
    type_head: bool = field(default=True, metadata=_opt("Train the image articleType head."))
    type_weight: float = field(
        default=TYPE_WEIGHT, metadata=_opt("Weight of the type block in image vectors.")
    )
    type_temperature: float = field(
        default=TYPE_TEMPERATURE, metadata=_opt("The type logits are divided by this (> 0).")
    )
    type_seeds: int = field(
        default=TYPE_SEEDS, metadata=_opt("Type heads merged from this many seeds.", minimum=1)
    )
    type_hidden: int = field(
        default=TYPE_HIDDEN, metadata=_opt("Hidden units of each type head member.", minimum=0)
    )
    photo_views: int = field(
        default=0,
        metadata=_opt(
            "Shopper-photo views (crop, rotation, JPEG) of each training image, trained as "
            "extra rows with its captions and labels (0: none).",
            minimum=0,
        ),
    )
    backbone_block: int = field(
        default=BACKBONE_BLOCK,
        metadata=_opt(
            "Whitened principal axes of the raw backbone features appended to image vectors "
            "(at most one fewer than the training products; 0: none); shopper photos find "
            "their product more often.",
            minimum=0,
        ),
    )
    backbone_block_weight: float = field(
        default=BACKBONE_BLOCK_WEIGHT,
        metadata=_opt("Share of an image vector's square norm in the backbone block (0..1)."),
    )
    validation_fold: int | None = field(
        default=None,
        metadata=_opt(
            "Also leave out fold K (1..4) and evaluate on it, not on the held-out split."
        ),
    )
    backbone: str = field(default=DEFAULT_BACKBONE, metadata=_opt("Image backbone."))
    resolution: int = field(
        default=MODEL_RESOLUTION, metadata=_opt("Image input resolution (px).", minimum=32)
    )
    pooling: str = field(default=MODEL_POOLING, metadata=_opt("Image poolings, e.g. gap,gmp,mid."))
    evaluate: bool = field(
        default=True, metadata=_opt("Evaluate the written heads on the held-out products.")
    )
    evaluate_untrained: bool = field(
        default=False, metadata=_opt("Also evaluate the untrained heads.")
    )
    appearance_sweep: tuple[float, ...] = field(
        default=(), metadata=_opt("Appearance weights to report image-image metrics with.")
    )

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ConfigError(f"batch size must be >= 2, got {self.batch_size}")
        if self.validation_fold is not None and self.validation_fold not in (1, 2, 3, 4):
            raise ConfigError(
                f"validation fold must be 1..4 (fold 0 is held out), got {self.validation_fold}"
            )
        if self.type_head and not self.type_temperature > 0:
            raise ConfigError(
                f"the type block's temperature must be > 0, got {self.type_temperature}"
            )
        if self.colour_seeds < 1 or self.colour_hidden < 0 or self.colour_rank < 0:
            raise ConfigError(
                "colour heads need seeds >= 1, hidden >= 0 and rank >= 0, got "
                f"{self.colour_seeds}, {self.colour_hidden} and {self.colour_rank}"
            )
        if self.backbone_block < 0 or not 0.0 < self.backbone_block_weight < 1.0:
            raise ConfigError(
                "the backbone block needs dims >= 0 and a weight in (0, 1), got "
                f"{self.backbone_block} and {self.backbone_block_weight}"
            )
        if self.type_seeds < 1 or self.type_hidden < 0:
            raise ConfigError(
                f"the type head needs seeds >= 1 and hidden >= 0, got {self.type_seeds}, "
                f"{self.type_hidden}"
            )

    @property
    def eval_fold(self) -> int:
        """The fold evaluated (and left out of training): 0 is the held-out split."""
        return 0 if self.validation_fold is None else self.validation_fold

    def settings(self) -> dict[str, Any]:
        """The model-shaping settings, as written into the model's ``config.json``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUN_FIELDS}


__all__ = [
    "BACKBONE_BLOCK_WEIGHT",
    "COLOUR_HIDDEN",
    "COLOUR_IMAGE_WEIGHT",
    "COLOUR_RANK",
    "COLOUR_SEEDS",
    "COLOUR_TEXT_WEIGHT",
    "MODEL_POOLING",
    "MODEL_RESOLUTION",
    "RUN_FIELDS",
    "TYPE_HIDDEN",
    "TYPE_SEEDS",
    "TYPE_TEMPERATURE",
    "TYPE_WEIGHT",
    "TrainConfig",
]
