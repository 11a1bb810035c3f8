"""Query sets as shoppers type them: attribute phrases with typos, product codes, brand names.

Same shape as the generators of :mod:`clipy_qdrant.eval.catalog_queries` (catalog payloads in,
a seed, ``heldout_only`` / ``heldout`` for the held-out rule; same payloads and seed, same
queries):

- :func:`typo_queries`: the attribute phrases of
  :func:`~clipy_qdrant.eval.catalog_queries.attribute_queries` (same ``n``, ``seed`` and split,
  so the ``attribute`` set is their clean baseline) with their longest word misspelt, once per kind
  of edit (sets ``typo/transposition``, ``typo/deletion``, ``typo/insertion``,
  ``typo/substitution``) and once with two edits of random kinds (``typo/2-edits``). A
  misspelling that gives a catalog word ("shirts" → "shirt") is redrawn: a typo is a word
  the catalog does not know. Relevance is the phrase's attribute rule.
- :func:`code_queries`: product codes taken from names (a token with letters and digits, at
  least ``min_length`` characters, in at most ``max_products`` products: "CH2586") → every
  product whose name carries the code, searched over the whole catalog like known-item.
- :func:`brand_queries`: a brand alone ("Fossil") → the gallery's products of that brand.
  Brands come from a ``brand`` metadata field when the catalog has one; otherwise from the
  first word of product names, kept when at least ``min_products`` gallery products start
  with it and it is not an attribute word (a gender, colour, type… value: "Red" in "Red
  Tape" is left out).
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from clipy_qdrant.eval.catalog_queries import (
    HeldoutRule,
    _clean,
    _gallery,
    _pid,
    _pool,
    attribute_queries,
)
from clipy_qdrant.eval.queries import EvalQuery
from clipy_qdrant.lexical import normalise_text, tokenize

TYPO = "typo"
CODE = "code"
BRAND = "brand"
#: The kinds of single edit, each a query set ``typo/<kind>``; two edits make ``typo/2-edits``.
EDIT_KINDS: tuple[str, ...] = ("transposition", "deletion", "insertion", "substitution")
TWO_EDITS = "2-edits"
BRAND_FIELD = "brand"
NAME_FIELD = "productDisplayName"
#: Metadata fields whose values are attribute words, never brands.
ATTRIBUTE_FIELDS: tuple[str, ...] = (
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "usage",
)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_WORD = re.compile(r"[^\W_]+")
_ATTEMPTS = 20


def misspell(word: str, kind: str, rng: random.Random) -> str:
    """``word`` with one edit of ``kind`` at a random place (lower-case letters are inserted
    or substituted; a transposition swaps two different neighbouring letters)."""
    if kind == "transposition":
        spots = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
        if not spots:
            return word
        i = rng.choice(spots)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "deletion":
        i = rng.randrange(len(word))
        return word[:i] + word[i + 1 :]
    if kind == "insertion":
        i = rng.randrange(len(word) + 1)
        return word[:i] + rng.choice(_LETTERS) + word[i:]
    if kind == "substitution":
        i = rng.randrange(len(word))
        return word[:i] + rng.choice(_LETTERS.replace(word[i], "")) + word[i + 1 :]
    raise ValueError(f"unknown edit kind {kind!r}; expected one of {', '.join(EDIT_KINDS)}")


def _longest_word(text: str) -> re.Match[str] | None:
    """The longest all-letter word of ``text`` (the first of equals)."""
    best: re.Match[str] | None = None
    for match in _WORD.finditer(text):
        if match.group().isalpha() and (best is None or len(match.group()) > len(best.group())):
            best = match
    return best


def _catalog_words(products: Sequence[Mapping[str, Any]]) -> set[str]:
    words: set[str] = set()
    for p in products:
        for value in p.values():
            if isinstance(value, str):
                words.update(tokenize(value))
    return words


def typo_queries(
    products: Sequence[Mapping[str, Any]],
    *,
    n: int = 300,
    seed: int = 0,
    min_relevant: int = 5,
    min_word_length: int = 4,
    heldout_only: bool = True,
    heldout: HeldoutRule | None = None,
) -> list[EvalQuery]:
    """Attribute phrases with their longest word misspelt: one query per edit kind and one
    with two edits, for each phrase whose longest word has ``min_word_length`` letters."""
    base = attribute_queries(
        products,
        n=n,
        seed=seed,
        min_relevant=min_relevant,
        heldout_only=heldout_only,
        heldout=heldout,
    )
    known = _catalog_words(products)
    rng = random.Random(seed)
    out: list[EvalQuery] = []
    for query in base:
        text = query.text or ""
        match = _longest_word(text)
        if match is None or len(match.group()) < min_word_length:
            continue
        word = match.group()
        plans: list[tuple[str, tuple[str, ...]]] = [(kind, (kind,)) for kind in EDIT_KINDS]
        plans.append((TWO_EDITS, (rng.choice(EDIT_KINDS), rng.choice(EDIT_KINDS))))
        for name, kinds in plans:
            typo = word
            for _ in range(_ATTEMPTS):
                typo = word
                for kind in kinds:
                    typo = misspell(typo, kind, rng)
                if typo != word and normalise_text(typo) not in known:
                    break
            else:
                continue  # every draw gave the word back or another catalog word
            out.append(
                EvalQuery(
                    id=f"{query.id}-{name}",
                    set=f"{TYPO}/{name}",
                    text=text[: match.start()] + typo + text[match.end() :],
                    relevant_rule=query.relevant_rule,
                    gallery=query.gallery,
                )
            )
    return out


def product_codes(
    products: Sequence[Mapping[str, Any]], *, min_length: int = 4, max_products: int = 3
) -> dict[str, tuple[str, list[str]]]:
    """Codes in product names: folded code → (its most common written form, the ids of the
    products whose names carry it, in id order). A code mixes letters and digits, has at
    least ``min_length`` characters and appears in at most ``max_products`` products."""
    carriers: dict[str, set[str]] = defaultdict(set)
    forms: dict[str, Counter[str]] = defaultdict(Counter)
    for p in products:
        for match in _WORD.finditer(_clean(p.get(NAME_FIELD))):
            token = match.group()
            has_digit = any(ch.isdigit() for ch in token)
            if len(token) < min_length or not has_digit or not any(ch.isalpha() for ch in token):
                continue
            folded = normalise_text(token)
            carriers[folded].add(_pid(p))
            forms[folded][token] += 1
    return {
        code: (
            min(forms[code].items(), key=lambda kv: (-kv[1], kv[0]))[0],
            sorted(ids, key=lambda pid: (len(pid), pid)),
        )
        for code, ids in carriers.items()
        if len(ids) <= max_products
    }


def code_queries(
    products: Sequence[Mapping[str, Any]],
    *,
    n: int = 300,
    seed: int = 0,
    min_length: int = 4,
    max_products: int = 3,
    heldout_only: bool = True,
    heldout: HeldoutRule | None = None,
) -> list[EvalQuery]:
    """A product code as typed ("CH2586") → every product whose name carries it, over the
    whole catalog; only codes a query-pool product carries (see :func:`product_codes`)."""
    pool_ids = {_pid(p) for p in _pool(products, heldout_only, heldout)}
    codes = product_codes(products, min_length=min_length, max_products=max_products)
    eligible = sorted(code for code, (_, ids) in codes.items() if pool_ids.intersection(ids))
    chosen = sorted(random.Random(seed).sample(eligible, min(n, len(eligible))))
    return [
        EvalQuery(
            id=f"code-{code}",
            set=CODE,
            text=codes[code][0],
            relevant_ids=tuple(codes[code][1]),
            gallery="all",
        )
        for code in chosen
    ]


def _first_word(name: str) -> str:
    parts = name.split()
    return parts[0] if parts else ""


def brand_queries(
    products: Sequence[Mapping[str, Any]],
    *,
    n: int = 200,
    seed: int = 0,
    min_products: int = 20,
    heldout_only: bool = True,
    heldout: HeldoutRule | None = None,
) -> list[EvalQuery]:
    """A brand alone → the gallery products of that brand (see the module docstring for where
    brands come from); brands with at least ``min_products`` gallery products."""
    pool = _pool(products, heldout_only, heldout)
    gallery = _gallery(heldout_only)
    rng = random.Random(seed)
    if any(_clean(p.get(BRAND_FIELD)) for p in products):
        counts = Counter(_clean(p.get(BRAND_FIELD)) for p in pool)
        counts.pop("", None)
        brands = sorted(b for b, c in counts.items() if c >= min_products)
        chosen = sorted(rng.sample(brands, min(n, len(brands))))
        return [
            EvalQuery(
                id=f"brand-{normalise_text(b)}",
                set=BRAND,
                text=b,
                relevant_rule={BRAND_FIELD: [b]},
                gallery=gallery,
            )
            for b in chosen
        ]
    attribute_words = {
        word
        for p in products
        for name in ATTRIBUTE_FIELDS
        for word in tokenize(_clean(p.get(name)))
    }
    members: dict[str, list[str]] = defaultdict(list)
    forms: dict[str, Counter[str]] = defaultdict(Counter)
    for p in pool:
        first = _first_word(_clean(p.get(NAME_FIELD)))
        key = normalise_text(first)
        if not tokenize(first) or any(w in attribute_words for w in tokenize(first)):
            continue
        members[key].append(_pid(p))
        forms[key][first] += 1
    keys = sorted(k for k, ids in members.items() if len(ids) >= min_products)
    chosen = sorted(rng.sample(keys, min(n, len(keys))))
    out: list[EvalQuery] = []
    for key in chosen:
        text = min(forms[key].items(), key=lambda kv: (-kv[1], kv[0]))[0]
        out.append(
            EvalQuery(
                id=f"brand-{key}",
                set=BRAND,
                text=text,
                relevant_ids=tuple(members[key]),
                gallery=gallery,
            )
        )
    return out


__all__ = [
    "ATTRIBUTE_FIELDS",
    "BRAND",
    "CODE",
    "EDIT_KINDS",
    "TWO_EDITS",
    "TYPO",
    "brand_queries",
    "code_queries",
    "misspell",
    "product_codes",
    "typo_queries",
]
