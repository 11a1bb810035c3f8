"""Training captions of a product: its name and attribute phrases built from its metadata."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from clipy_qdrant.training.products import ProductLike
from clipy_qdrant.training.products import clean as _clean

_GENDER_WORDS = {
    "men": "men's",
    "women": "women's",
    "boys": "boys'",
    "girls": "girls'",
    "unisex": "unisex",
}


def attribute_phrases(metadata: dict[str, Any]) -> list[str]:
    """Short natural queries built from a product's metadata ("men's red casual shoes").

    Each is an extra positive caption for the product's image; duplicates removed, order kept.
    """
    article = _clean(metadata.get("articleType")).lower()
    if not article:
        article = _clean(metadata.get("subCategory")).lower()
    if not article:
        return []
    colour = _clean(metadata.get("baseColour")).lower()
    gender = _GENDER_WORDS.get(_clean(metadata.get("gender")).lower(), "")
    usage = _clean(metadata.get("usage")).lower()
    season = _clean(metadata.get("season")).lower()
    candidates = [
        article,
        f"{colour} {article}" if colour else "",
        f"{gender} {article}" if gender else "",
        f"{gender} {colour} {article}" if gender and colour else "",
        f"{colour} {article} for {gender.rstrip(chr(39)).removesuffix(chr(39) + 's')}"
        if gender and colour and gender != "unisex"
        else "",
        f"{gender} {colour} {usage} {article}" if gender and colour and usage else "",
        f"{usage} {article}" if usage else "",
        f"{season} {colour} {article}" if season and colour else "",
        colour,
    ]
    seen: set[str] = set()
    phrases: list[str] = []
    for phrase in candidates:
        phrase = " ".join(phrase.split())
        if phrase and phrase not in seen:
            seen.add(phrase)
            phrases.append(phrase)
    return phrases


def product_captions(product: ProductLike, augment: bool = True) -> list[str]:
    """The product's text first, then (with ``augment``) its attribute phrases."""
    captions = [product.text.strip()] if product.text and product.text.strip() else []
    if augment:
        captions += [p for p in attribute_phrases(product.metadata) if p not in captions]
    return captions


def _mentions(text: str, phrase: str) -> bool:
    """True when ``phrase`` occurs in ``text`` as whole words (case-insensitive)."""
    return re.search(r"\b" + re.escape(phrase) + r"\b", text.lower()) is not None


def colour_caption_targets(
    products: Sequence[ProductLike], classes: Sequence[str], augment: bool = True
) -> tuple[list[str], np.ndarray]:
    """Distinct captions of ``products`` and their colour targets (len(classes) + 1 columns).

    A caption's target is the product's baseColour when the caption names it ("red tshirts",
    "Nike Men Red Shoes"), else the last column, "no colour named" ("tshirts"); a caption
    shared by several products averages their targets.
    """
    lookup = {c.lower(): k for k, c in enumerate(classes)}
    none = len(classes)
    rows: dict[str, np.ndarray] = {}
    for product in products:
        colour = _clean(product.metadata.get("baseColour")).lower()
        for caption in product_captions(product, augment):
            target = rows.setdefault(caption, np.zeros(len(classes) + 1, np.float32))
            hit = colour in lookup and _mentions(caption, colour)
            target[lookup[colour] if hit else none] += 1.0
    texts = sorted(rows)
    targets = np.stack([rows[t] for t in texts]) if texts else np.zeros((0, none + 1), np.float32)
    return texts, targets / np.maximum(targets.sum(1, keepdims=True), 1.0)
