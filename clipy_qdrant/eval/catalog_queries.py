"""Query generators over the catalog payloads: known-item, category, attribute, image, composed.

Generators take the catalog payloads (``StoredPoint.payload`` dicts with ``product_id``,
e.g. from ``store.scroll()``) and a seed; the same payloads and seed give the same queries
(:class:`~clipy_qdrant.eval.queries.EvalQuery`). With ``heldout_only`` (the default) they ask
only about held-out products and search the held-out gallery, except known-item queries,
which search the whole catalog, as on the Marqo-FashionCLIP leaderboard. Which products are
held out is a predicate on the product id, ``heldout``: by default
:func:`clipy_qdrant.split.is_heldout`, the rule training uses; an experiment that scores a
validation fold passes its own (``lambda pid: int(pid) % 5 == 1``).

:func:`make_query_sets` makes every kind, the shopper sets of
:mod:`~clipy_qdrant.eval.shopper_queries` included, keyed by file stem (:data:`QUERY_FILES`).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clipy_qdrant.errors import InputError
from clipy_qdrant.eval.queries import PRODUCT_REF, EvalQuery, Gallery
from clipy_qdrant.split import is_heldout
from clipy_qdrant.store.base import PRODUCT_ID_KEY

#: A predicate on a product id: True for the products queries are about and, except
#: known-item, the gallery they are scored on.
HeldoutRule = Callable[[str], bool]

KNOWN_ITEM = "known-item"
#: The known-item names scored with every product of exactly that name relevant (the
#: leaderboard's relevance, and "ties between products sharing a name aside").
SAME_NAME = "known-item/same-name"
#: Every display name that no training product has, each relevant to all its products: the
#: leaderboard's protocol restricted to names the encoder never saw (issue #18's held-out form).
UNSEEN_NAME = "known-item/unseen-name"
CATEGORY_FIELDS: tuple[str, ...] = ("articleType", "subCategory", "masterCategory", "baseColour")
ATTRIBUTE = "attribute"
IMAGE_TYPE = "image/articleType"
IMAGE_TYPE_COLOUR = "image/articleType+colour"
COMPOSED = "composed"


def _clean(value: Any) -> str:
    """A metadata value as a string; empty for missing / NA."""
    if value is None:
        return ""
    text = str(value).strip()
    return "" if text in ("", "NA", "nan", "None") else text


def _pid(product: Mapping[str, Any]) -> str:
    return str(product[PRODUCT_ID_KEY])


def _id_order(pid: str) -> tuple[int, str]:
    """Sort key of product ids: numeric ids in numeric order (shorter first), then as text."""
    return len(pid), pid


def _ids_by_name(products: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each display name → the ids of the products that have it, in catalog order."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for p in products:
        name = _clean(p.get("productDisplayName"))
        if name:
            by_name[name].append(_pid(p))
    return by_name


def _pool(
    products: Sequence[Mapping[str, Any]], heldout_only: bool, heldout: HeldoutRule | None
) -> list[Mapping[str, Any]]:
    """The products queries may be about (and, except known-item, the gallery), in id order."""
    rule = is_heldout if heldout is None else heldout
    pool = [p for p in products if not heldout_only or rule(_pid(p))]
    return sorted(pool, key=lambda p: _id_order(_pid(p)))


def _gallery(heldout_only: bool) -> Gallery:
    return "heldout" if heldout_only else "all"


def known_item_queries(
    products: Sequence[Mapping[str, Any]],
    *,
    n: int = 2000,
    seed: int = 0,
    heldout_only: bool = True,
    heldout: HeldoutRule | None = None,
) -> list[EvalQuery]:
    """A product's display name → that product, searched over the whole catalog."""
    pool = [
        p for p in _pool(products, heldout_only, heldout) if _clean(p.get("productDisplayName"))
    ]
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    chosen.sort(key=lambda p: _id_order(_pid(p)))
    return [
        EvalQuery(
            id=f"ki-{_pid(p)}",
            set=KNOWN_ITEM,
            text=_clean(p.get("productDisplayName")),
            relevant_ids=(_pid(p),),
            gallery="all",
        )
        for p in chosen
    ]


def same_name_queries(
    products: Sequence[Mapping[str, Any]], known_item: Sequence[EvalQuery]
) -> list[EvalQuery]:
    """The known-item queries again, each relevant to every catalog product whose display
    name is exactly the query's: a name shared by several products cannot tell them apart,
    so this set measures finding the name, and :data:`KNOWN_ITEM` finding the one product."""
    by_name = _ids_by_name(products)
    return [
        EvalQuery(
            id=f"same-name-{query.id.removeprefix('ki-')}",
            set=SAME_NAME,
            text=query.text,
            relevant_ids=tuple(sorted(by_name.get(query.text or "", query.relevant_ids or ()))),
            gallery="all",
        )
        for query in known_item
    ]


def unseen_name_queries(
    products: Sequence[Mapping[str, Any]],
    *,
    heldout_only: bool = True,
    heldout: HeldoutRule | None = None,
) -> list[EvalQuery]:
    """Every display name whose products are all held out → all of them, searched over the
    whole catalog: the names training never saw, each asked once. A name that a training
    product shares is left out (its image vectors were trained on that very text). Without
    ``heldout_only`` there is no unseen name, and the set is empty."""
    if not heldout_only:
        return []
    rule = is_heldout if heldout is None else heldout
    unseen = [
        (sorted(ids, key=_id_order), name)
        for name, ids in _ids_by_name(products).items()
        if all(rule(i) for i in ids)
    ]
    unseen.sort(key=lambda item: _id_order(item[0][0]))
    return [
        EvalQuery(
            id=f"unseen-name-{ids[0]}",
            set=UNSEEN_NAME,
            text=name,
            relevant_ids=tuple(ids),
            gallery="all",
        )
        for ids, name in unseen
    ]


def category_queries(
    products: Sequence[Mapping[str, Any]],
    *,
    fields: Sequence[str] = CATEGORY_FIELDS,
    min_relevant: int = 1,
    heldout_only: bool = True,
    heldout: HeldoutRule | None = None,
) -> list[EvalQuery]:
    """Each value of each field (as query text) → every gallery product with that value."""
    pool = _pool(products, heldout_only, heldout)
    out: list[EvalQuery] = []
    for name in fields:
        counts = Counter(_clean(p.get(name)) for p in pool)
        counts.pop("", None)
        for value in sorted(counts):
            if counts[value] < min_relevant:
                continue
            out.append(
                EvalQuery(
                    id=f"cat-{name}-{value}",
                    set=f"category/{name}",
                    text=value,
                    relevant_rule={name: [value]},
                    gallery=_gallery(heldout_only),
                )
            )
    return out


_TYPE_WORDS = {"tshirts": "t-shirts", "lounge tshirts": "lounge t-shirts"}
_COLOUR_WORDS = {"multi": "multicoloured"}
_GENDER_PHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    # (prefix, suffix) pairs: "men's {x}" / "{x} for men"
    "Men": (("men's ", ""), ("", " for men")),
    "Women": (("women's ", ""), ("", " for women")),
    "Boys": (("boys' ", ""), ("", " for boys")),
    "Girls": (("girls' ", ""), ("", " for girls")),
    "Unisex": (("unisex ", ""),),
}
#: Attribute combinations of the generated attribute queries (articleType is always one).
ATTRIBUTE_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("baseColour", "articleType"),
    ("gender", "articleType"),
    ("baseColour", "articleType", "gender"),
    ("usage", "articleType", "gender"),
    ("baseColour", "usage", "articleType", "gender"),
    ("season", "articleType", "gender"),
)


def phrase_attributes(attrs: Mapping[str, str], rng: random.Random) -> str:
    """A natural phrasing of an attribute combination: ``"red casual shoes for men"``."""
    article = attrs["articleType"].lower()
    words: list[str] = []
    if attrs.get("season"):
        words.append(attrs["season"].lower())
    if attrs.get("baseColour"):
        colour = attrs["baseColour"].lower()
        words.append(_COLOUR_WORDS.get(colour, colour))
    usage = attrs.get("usage", "").lower()
    if usage and usage not in article:  # "casual" + "casual shoes" says it once
        words.append(usage)
    words.append(_TYPE_WORDS.get(article, article))
    core = " ".join(words)
    gender = attrs.get("gender", "")
    if gender in _GENDER_PHRASES:
        prefix, suffix = rng.choice(_GENDER_PHRASES[gender])
        return f"{prefix}{core}{suffix}"
    return core


def attribute_queries(
    products: Sequence[Mapping[str, Any]],
    *,
    n: int = 300,
    seed: int = 0,
    min_relevant: int = 5,
    heldout_only: bool = True,
    heldout: HeldoutRule | None = None,
    templates: Sequence[tuple[str, ...]] = ATTRIBUTE_TEMPLATES,
) -> list[EvalQuery]:
    """Natural phrasings of metadata combinations ("women's black handbags") → the gallery
    products matching every attribute; only combinations with ``min_relevant`` products."""
    pool = _pool(products, heldout_only, heldout)
    combos: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    for template in templates:
        counts = Counter(tuple(_clean(p.get(name)) for name in template) for p in pool)
        for values, count in sorted(counts.items()):
            if count >= min_relevant and all(values):
                combos.append((template, values))
    rng = random.Random(seed)
    chosen = rng.sample(combos, min(n, len(combos)))
    out: list[EvalQuery] = []
    used: set[str] = set()
    for template, values in chosen:
        attrs = dict(zip(template, values, strict=True))
        text = phrase_attributes(attrs, rng)
        if text in used:  # two templates can phrase alike ("casual shoes for men")
            continue
        used.add(text)
        out.append(
            EvalQuery(
                id=f"attr-{len(out) + 1:04d}",
                set=ATTRIBUTE,
                text=text,
                relevant_rule={name: [attrs[name]] for name in template},
                gallery=_gallery(heldout_only),
            )
        )
    return out


def image_queries(
    products: Sequence[Mapping[str, Any]],
    *,
    n: int = 500,
    seed: int = 0,
    min_relevant: int = 1,
    heldout_only: bool = True,
    heldout: HeldoutRule | None = None,
) -> list[EvalQuery]:
    """Reverse image search: a product's stored image → other products of its articleType
    (set ``image/articleType``) and, for the same products, of its articleType and colour
    (``image/articleType+colour``, where at least ``min_relevant`` others exist)."""
    pool = _pool(products, heldout_only, heldout)
    types = Counter(_clean(p.get("articleType")) for p in pool)
    pairs = Counter((_clean(p.get("articleType")), _clean(p.get("baseColour"))) for p in pool)
    eligible = [
        p
        for p in pool
        if _clean(p.get("articleType")) and types[_clean(p.get("articleType"))] > min_relevant
    ]
    chosen = random.Random(seed).sample(eligible, min(n, len(eligible)))
    chosen.sort(key=lambda p: _id_order(_pid(p)))
    out: list[EvalQuery] = []
    gallery = _gallery(heldout_only)
    for p in chosen:
        pid, article, colour = _pid(p), _clean(p.get("articleType")), _clean(p.get("baseColour"))
        image, exclude = f"{PRODUCT_REF}{pid}", (pid,)
        out.append(
            EvalQuery(
                id=f"img-t-{pid}",
                set=IMAGE_TYPE,
                image=image,
                exclude=exclude,
                relevant_rule={"articleType": [article]},
                gallery=gallery,
            )
        )
        if colour and pairs[(article, colour)] > min_relevant:
            out.append(
                EvalQuery(
                    id=f"img-tc-{pid}",
                    set=IMAGE_TYPE_COLOUR,
                    image=image,
                    exclude=exclude,
                    relevant_rule={"articleType": [article], "baseColour": [colour]},
                    gallery=gallery,
                )
            )
    return out


def composed_queries(
    products: Sequence[Mapping[str, Any]],
    *,
    n: int = 200,
    seed: int = 0,
    min_relevant: int = 3,
    heldout_only: bool = True,
    heldout: HeldoutRule | None = None,
) -> list[EvalQuery]:
    """A product's image plus ``"in <colour>"`` → products of its articleType in that colour
    (another colour than its own, with at least ``min_relevant`` such products)."""
    pool = _pool(products, heldout_only, heldout)
    colours_of: dict[str, Counter[str]] = defaultdict(Counter)
    for p in pool:
        colours_of[_clean(p.get("articleType"))][_clean(p.get("baseColour"))] += 1
    rng = random.Random(seed)
    candidates = []
    for p in pool:
        article, own = _clean(p.get("articleType")), _clean(p.get("baseColour"))
        targets = sorted(
            c
            for c, count in colours_of[article].items()
            if c and c != own and c != "Multi" and count >= min_relevant
        )
        if article and targets:
            candidates.append((p, targets))
    chosen = rng.sample(candidates, min(n, len(candidates)))
    chosen.sort(key=lambda item: (len(_pid(item[0])), _pid(item[0])))
    out: list[EvalQuery] = []
    for p, targets in chosen:
        pid, article = _pid(p), _clean(p.get("articleType"))
        colour = rng.choice(targets)
        out.append(
            EvalQuery(
                id=f"comp-{pid}",
                set=COMPOSED,
                text=f"in {colour.lower()}",
                image=f"{PRODUCT_REF}{pid}",
                exclude=(pid,),
                relevant_rule={"articleType": [article], "baseColour": [colour]},
                gallery=_gallery(heldout_only),
            )
        )
    return out


@dataclass(frozen=True)
class QuerySetSizes:
    """How many queries each generator makes (category queries: every value)."""

    known_item: int = 2000
    attribute: int = 300
    image: int = 500
    composed: int = 200
    typo: int = 300
    code: int = 300
    brand: int = 200
    #: Products of the shopper-photo sets (:mod:`clipy_qdrant.eval.photo_queries`).
    photo: int = 500


#: File stem (``<stem>.jsonl``) of each generated kind (the typo file holds one set per kind
#: of edit: ``typo/transposition``, …, see :mod:`clipy_qdrant.eval.shopper_queries`).
QUERY_FILES: tuple[str, ...] = (
    "known-item",
    "category",
    "attribute",
    "image",
    "composed",
    "typo",
    "code",
    "brand",
)


def make_query_sets(
    products: Sequence[Mapping[str, Any]],
    *,
    seed: int = 0,
    heldout_only: bool = True,
    heldout: HeldoutRule | None = None,
    sizes: QuerySetSizes | None = None,
) -> dict[str, list[EvalQuery]]:
    """Every kind of generated query, keyed by file stem (see :data:`QUERY_FILES`);
    ``heldout`` picks the held-out products (default :func:`clipy_qdrant.split.is_heldout`)."""
    # The shopper sets build on this module's generators: imported here, not at the top.
    from clipy_qdrant.eval.shopper_queries import brand_queries, code_queries, typo_queries

    only, rule = heldout_only, heldout
    sizes = sizes or QuerySetSizes()
    if not products:
        raise InputError("the store has no products to make queries from; ingest the catalog first")
    known_item = known_item_queries(
        products, n=sizes.known_item, seed=seed, heldout_only=only, heldout=rule
    )
    return {
        "known-item": known_item
        + same_name_queries(products, known_item)
        + unseen_name_queries(products, heldout_only=only, heldout=rule),
        "category": category_queries(products, heldout_only=only, heldout=rule),
        "attribute": attribute_queries(
            products, n=sizes.attribute, seed=seed, heldout_only=only, heldout=rule
        ),
        "image": image_queries(products, n=sizes.image, seed=seed, heldout_only=only, heldout=rule),
        "composed": composed_queries(
            products, n=sizes.composed, seed=seed, heldout_only=only, heldout=rule
        ),
        "typo": typo_queries(products, n=sizes.typo, seed=seed, heldout_only=only, heldout=rule),
        "code": code_queries(products, n=sizes.code, seed=seed, heldout_only=only, heldout=rule),
        "brand": brand_queries(products, n=sizes.brand, seed=seed, heldout_only=only, heldout=rule),
    }


__all__ = [
    "ATTRIBUTE",
    "CATEGORY_FIELDS",
    "COMPOSED",
    "IMAGE_TYPE",
    "IMAGE_TYPE_COLOUR",
    "KNOWN_ITEM",
    "QUERY_FILES",
    "SAME_NAME",
    "UNSEEN_NAME",
    "HeldoutRule",
    "QuerySetSizes",
    "attribute_queries",
    "category_queries",
    "composed_queries",
    "image_queries",
    "known_item_queries",
    "make_query_sets",
    "phrase_attributes",
    "same_name_queries",
    "unseen_name_queries",
]
