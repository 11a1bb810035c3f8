"""A tiny, randomly initialised CLIP built offline, for tests that need a real CLIP folder.

``build_tiny_clip(path)`` writes a transformers ``CLIPModel`` (hidden size 32, 2 layers,
32×32 images in 8×8 patches, 16-d projection), a ``CLIPTokenizer`` over a hand-written
character vocabulary and a ``CLIPImageProcessor`` sized 32, all with ``save_pretrained``,
so that ``SentenceTransformer(path)`` loads it through its ordinary loading code.
The weights are seeded: the same call always writes the same model.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

TINY_CLIP_SEED = 1234
TINY_CLIP_PROJECTION_DIM = 16
_IMAGE_SIZE = 32

# Every character the tokenizer knows, alone and as a word end ("a</w>").
_ALPHABET = string.ascii_lowercase + string.digits + string.punctuation


def _vocab() -> dict[str, int]:
    tokens = list(_ALPHABET) + [f"{char}</w>" for char in _ALPHABET]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def build_tiny_clip(path: str | Path) -> Path:
    """Write a tiny seeded CLIP model, tokenizer and image processor into ``path``; return it."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)

    vocab = _vocab()
    vocab_file = folder / "vocab.json"
    merges_file = folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    # No merges: every word splits into characters, which the vocabulary covers.
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")

    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": _IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=TINY_CLIP_PROJECTION_DIM,
    )
    torch.manual_seed(TINY_CLIP_SEED)
    model = CLIPModel(config).eval()

    tokenizer = CLIPTokenizer(
        vocab=str(vocab_file),
        merges=str(merges_file),
        model_max_length=64,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": _IMAGE_SIZE},
        crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
    )

    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
