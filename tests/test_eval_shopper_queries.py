"""Typo, product-code and brand query generators, on a small hand-made catalog."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from clipy_qdrant.eval.catalog_queries import attribute_queries
from clipy_qdrant.eval.shopper_queries import (
    EDIT_KINDS,
    brand_queries,
    code_queries,
    misspell,
    product_codes,
    typo_queries,
)
from clipy_qdrant.lexical import tokenize
from clipy_qdrant.spelling import damerau_levenshtein
from clipy_qdrant.split import is_heldout

TYPES = ["Sneakers", "Jeans", "Handbags"]
COLOURS = ["Red", "Blue", "Black", "White"]
BRANDS = ["Puma", "Fossil", "Baggit", "Red Tape"]


def catalog(n: int = 160) -> list[dict[str, Any]]:
    """Product i: brand i % 4, type i % 3, colour i % 4; every 7th carries a code of its own,
    products 1 and 2 share the code "AB12", and products 3..6 share "ZZ99" (too common)."""
    products = []
    for i in range(n):
        code = f" CH{2500 + i}" if i % 7 == 0 else ""
        if i in (1, 2):
            code = " AB12"
        if i in (3, 4, 5, 6):
            code = " ZZ99"
        products.append(
            {
                "product_id": str(i),
                "articleType": TYPES[i % 3],
                "baseColour": COLOURS[i % 4],
                "gender": "Men" if i % 2 == 0 else "Women",
                "usage": "Casual",
                "season": "Summer",
                "productDisplayName": f"{BRANDS[i % 4]} {COLOURS[i % 4]} {TYPES[i % 3]}{code}",
            }
        )
    return products


def every(_: str) -> bool:
    return True


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_misspell_makes_one_edit_of_its_kind(kind: str) -> None:
    rng = random.Random(0)
    for word in ("sneakers", "jeans", "handbags", "ab"):
        typo = misspell(word, kind, rng)
        assert typo != word
        assert damerau_levenshtein(typo, word) == 1
        assert len(typo) - len(word) == {"deletion": -1, "insertion": 1}.get(kind, 0)
        if kind == "transposition":
            assert sorted(typo) == sorted(word)
    assert misspell("aaa", "transposition", rng) == "aaa"  # nothing to swap
    with pytest.raises(ValueError, match="unknown edit kind"):
        misspell("word", "swap", rng)


def test_typo_queries_misspell_the_longest_word_of_each_attribute_phrase() -> None:
    products = catalog()
    base = {q.id: q for q in attribute_queries(products, n=10, seed=3, min_relevant=2)}
    queries = typo_queries(products, n=10, seed=3, min_relevant=2)
    known = {w for p in products for v in p.values() if isinstance(v, str) for w in tokenize(v)}
    assert Counter(q.set for q in queries) == {
        f"typo/{name}": len(base) for name in (*EDIT_KINDS, "2-edits")
    }
    for q in queries:
        kind = q.set.split("/", 1)[1]
        clean = base[q.id.removesuffix(f"-{kind}")]
        assert q.relevant_rule == clean.relevant_rule and q.gallery == clean.gallery
        assert q.text != clean.text
        before, after = (clean.text or "").split(), (q.text or "").split()
        assert len(before) == len(after)
        changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
        assert len(changed) == 1
        word, typo = changed[0]
        longest = max((w for w in tokenize(clean.text or "") if w.isalpha()), key=len)
        assert tokenize(word)[0] == longest or len(tokenize(word)[0]) == len(longest)
        assert any(t not in known for t in tokenize(typo))  # a word the catalog lacks
        limit = 1 if kind in EDIT_KINDS else 2
        assert 1 <= damerau_levenshtein(word, typo, limit=3) <= limit


def test_typo_queries_are_seeded_and_respect_the_heldout_rule() -> None:
    products = catalog()
    assert typo_queries(products, n=8, seed=1, min_relevant=2) == typo_queries(
        products, n=8, seed=1, min_relevant=2
    )
    assert typo_queries(products, n=8, seed=1, min_relevant=2) != typo_queries(
        products, n=8, seed=2, min_relevant=2
    )
    assert typo_queries(products, n=8, min_relevant=2) == typo_queries(
        products, n=8, min_relevant=2, heldout=is_heldout
    )
    everything = typo_queries(products, n=8, min_relevant=2, heldout_only=False)
    assert {q.gallery for q in everything} == {"all"}


def test_product_codes_carry_their_products() -> None:
    products = catalog()
    codes = product_codes(products)
    assert codes["ab12"] == ("AB12", ["1", "2"])
    assert "zz99" not in codes  # in four products
    assert "puma" not in codes  # no digit
    assert product_codes(products, max_products=4)["zz99"][1] == ["3", "4", "5", "6"]
    assert "ab12" not in product_codes(products, min_length=5)


def test_code_queries_find_the_products_whose_names_carry_the_code() -> None:
    products = catalog()
    by_id = {p["product_id"]: p for p in products}
    queries = code_queries(products, heldout=every)
    assert queries and all(q.set == "code" and q.gallery == "all" for q in queries)
    for q in queries:
        assert q.relevant_ids
        for pid in q.relevant_ids:
            assert q.text in by_id[pid]["productDisplayName"]
        carriers = [p["product_id"] for p in products if q.text in p["productDisplayName"]]
        assert sorted(carriers) == sorted(q.relevant_ids)
    assert code_queries(products, heldout=every, n=3, seed=5) == code_queries(
        products, heldout=every, n=3, seed=5
    )
    assert len(code_queries(products, heldout=every, n=3, seed=5)) == 3
    # Held out: only codes a held-out product carries (ids divisible by 5 here).
    heldout = code_queries(products, heldout=lambda pid: int(pid) % 5 == 0)
    assert heldout and all(any(int(pid) % 5 == 0 for pid in q.relevant_ids) for q in heldout)


def test_brand_queries_from_first_words_skip_attribute_words() -> None:
    products = catalog()
    queries = brand_queries(products, heldout=every, min_products=10)
    # "Red" (of "Red Tape") is a colour, so it is not taken for a brand.
    assert [q.text for q in queries] == ["Baggit", "Fossil", "Puma"]
    for q in queries:
        assert q.set == "brand" and q.gallery == "heldout"
        assert q.relevant_ids
        assert all(
            p["productDisplayName"].startswith(q.text + " ")
            for p in products
            if p["product_id"] in set(q.relevant_ids)
        )
        assert len(q.relevant_ids) == sum(
            p["productDisplayName"].startswith(q.text + " ") for p in products
        )
    assert brand_queries(products, heldout=every, min_products=41) == []
    held = brand_queries(products, heldout=lambda pid: int(pid) % 5 == 0, min_products=5)
    assert held and all(int(pid) % 5 == 0 for q in held for pid in q.relevant_ids or ())


def test_brand_queries_use_a_brand_field_when_the_catalog_has_one() -> None:
    products = [dict(p, brand=p["productDisplayName"].split()[0] + "Co") for p in catalog()]
    queries = brand_queries(products, heldout=every, min_products=10, heldout_only=False)
    assert [q.text for q in queries] == ["BaggitCo", "FossilCo", "PumaCo", "RedCo"]
    assert queries[0].relevant_rule == {"brand": ["BaggitCo"]} and queries[0].gallery == "all"
    assert brand_queries(products, heldout=every, min_products=10, n=2, seed=1) == brand_queries(
        products, heldout=every, min_products=10, n=2, seed=1
    )
