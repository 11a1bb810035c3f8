"""Encoder throughput side by side on the same products: the shipped ``fashion-mini`` and a
CLIP ViT-B/32-sized model with random weights loaded through sentence-transformers.

The CLIP stand-in is built offline: transformers' ``CLIPConfig`` defaults are the ViT-B/32
sizes (text 512-d × 12 layers, vision 768-d × 12 layers, 32-px patches at 224 px,
512-d projection); its tokenizer is a ``CLIPTokenizer`` over a hand-written character
vocabulary without merges (the embedding table keeps CLIP's 49,408 rows), so a text is as
many tokens as characters, several times more than CLIP's BPE gives, which overstates its
text cost; its image cost is the real model's. Its weights are random, so only its speed
means anything.
"""

from __future__ import annotations

import io
import json
import string
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

from clipy_qdrant.encoders import Encoder, get_encoder


def catalog_rows(catalog: Path, n: int) -> tuple[list[bytes], list[str]]:
    """The first ``n`` products' image bytes and display names."""
    import pyarrow.parquet as pq

    files = sorted(catalog.rglob("*.parquet")) if catalog.is_dir() else [catalog]
    table = pq.read_table(files[0], columns=["image", "productDisplayName"]).slice(0, n)
    images = [row["bytes"] for row in table.column("image").to_pylist()]
    names = [str(name) for name in table.column("productDisplayName").to_pylist()]
    return images, names


def build_random_clip_b32(folder: Path) -> Path:
    """Write a randomly initialised CLIP with ViT-B/32 sizes into ``folder``."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    alphabet = string.ascii_lowercase + string.digits + string.punctuation
    tokens = list(alphabet) + [f"{c}</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = CLIPConfig(
        text_config={
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        }
    )
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(folder)
    tokenizer = CLIPTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77
    )
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.convert("RGB")


def throughput(
    encoder: Encoder, blobs: list[bytes], names: list[str], batch: int
) -> dict[str, Any]:
    """Images/s end to end (decode included) and texts/s, batched, after a warm-up batch."""
    encoder.encode_images([_decode(b) for b in blobs[:8]], batch)
    encoder.encode_texts(names[:8], batch)
    start = time.perf_counter()
    for s in range(0, len(blobs), batch):
        encoder.encode_images([_decode(b) for b in blobs[s : s + batch]], batch)
    image_s = time.perf_counter() - start
    start = time.perf_counter()
    encoder.encode_texts(names, batch)
    text_s = time.perf_counter() - start
    return {
        "images_per_s": round(len(blobs) / image_s, 1),
        "texts_per_s": round(len(names) / text_s, 1),
        "products": len(blobs),
        "dim": encoder.info.dim,
    }


def run_encoders(catalog: Path, products: int, work: Path, batch: int = 64) -> dict[str, Any]:
    blobs, names = catalog_rows(catalog, products)
    out: dict[str, Any] = {}
    print(f"encoders: fashion-mini on {len(blobs)} products", file=sys.stderr)
    out["fashion-mini"] = throughput(get_encoder("fashion-mini"), blobs, names, batch)
    print("encoders: building a random CLIP ViT-B/32", file=sys.stderr)
    folder = build_random_clip_b32(work / "clip-b32-random")
    print(f"encoders: CLIP ViT-B/32 (random) on {len(blobs)} products", file=sys.stderr)
    out["clip-vit-b32-random"] = throughput(get_encoder(f"clip:{folder}"), blobs, names, batch)
    return out
