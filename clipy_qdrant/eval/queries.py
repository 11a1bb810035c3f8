"""Evaluation queries: the model, JSONL read/write, and generators over the catalog payloads.

One query per JSONL line (a file people can read and edit)::

    {"id": "ki-0001", "set": "known-item", "text": "Kipsta Men Jersey Red",
     "relevant": ["15970"], "gallery": "all"}
    {"id": "img-at-15970", "set": "image/articleType", "image": "product:15970",
     "exclude": ["15970"], "relevant": {"articleType": ["Jerseys"]}}

Keys:

- ``id`` (required, unique in a run) and ``set`` (the query set it is reported under;
  default ``"custom"``).
- ``text`` and/or ``image`` (at least one). ``image`` is a file path (relative paths are
  relative to the JSONL file's folder) or ``product:<id>``, a catalog product whose
  *stored* image vector is used as the query (the catalog images are not in the store).
- ``filters`` (optional): ``{"gender": ["Men"], "year": {"gte": 2015}}`` or a list of
  ``"field=value"`` strings (the ``--filter`` syntax); applied to the search, and relevant
  products must satisfy them too.
- ``relevant`` (required): a list of product ids, or a metadata rule
  ``{"articleType": ["Jeans"], "baseColour": ["Blue", "Navy Blue"]}`` (a product is
  relevant when every field has one of the listed values).
- ``exclude`` (optional): product ids never returned nor counted (e.g. the query product).
- ``gallery`` (optional): ``"all"`` (every product) or ``"heldout"`` (only held-out
  products are searched and can be relevant); absent means the run's default split.

Generators take the catalog payloads (``StoredPoint.payload`` dicts with ``product_id``,
e.g. from ``store.scroll()``) and a seed; the same payloads and seed give the same queries.
With ``heldout_only`` (the default) they ask only about held-out products and search the
held-out gallery, except known-item queries, which search the whole catalog, as on the
Marqo-FashionCLIP leaderboard. Which products are held out is a predicate on the product
id, ``heldout``: by default :func:`clipy_qdrant.split.is_heldout`, the rule training uses;
an experiment that scores a validation fold passes its own (``lambda pid: int(pid) % 5 == 1``).
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clipy_qdrant.errors import ClipyError, InputError
from clipy_qdrant.filters import Filter, filter_from_mapping, parse_filter
from clipy_qdrant.split import is_heldout
from clipy_qdrant.store.base import PRODUCT_ID_KEY

Gallery = Literal["all", "heldout"]
#: A predicate on a product id: True for the products queries are about and, except
#: known-item, the gallery they are scored on.
HeldoutRule = Callable[[str], bool]
GALLERIES: tuple[str, ...] = ("all", "heldout")
PRODUCT_REF = "product:"

KNOWN_ITEM = "known-item"
CATEGORY_FIELDS: tuple[str, ...] = ("articleType", "subCategory", "masterCategory", "baseColour")
ATTRIBUTE = "attribute"
IMAGE_TYPE = "image/articleType"
IMAGE_TYPE_COLOUR = "image/articleType+colour"
COMPOSED = "composed"

_KEYS = {"id", "set", "text", "image", "filters", "relevant", "exclude", "gallery"}


@dataclass(frozen=True)
class EvalQuery:
    """One evaluation query and what counts as a correct answer to it."""

    id: str
    set: str = "custom"
    text: str | None = None
    image: str | None = None  # a file path or "product:<id>"
    filters: Mapping[str, Any] | tuple[str, ...] | None = None
    relevant_ids: tuple[str, ...] | None = None
    relevant_rule: Mapping[str, Any] | None = None
    exclude: tuple[str, ...] = ()
    gallery: Gallery | None = None

    def __post_init__(self) -> None:
        if not self.text and not self.image:
            raise InputError(f"query {self.id!r} has neither text nor image")
        if (self.relevant_ids is None) == (self.relevant_rule is None):
            raise InputError(f"query {self.id!r} needs relevance: a list of ids or a rule")
        if self.gallery is not None and self.gallery not in GALLERIES:
            raise InputError(f"query {self.id!r}: gallery must be 'all' or 'heldout'")
        self.filter()  # fail early on a malformed filter
        self.relevance_filter()

    @property
    def image_product(self) -> str | None:
        """The product id of a ``product:<id>`` image reference, else ``None``."""
        if self.image and self.image.startswith(PRODUCT_REF):
            return self.image[len(PRODUCT_REF) :]
        return None

    def filter(self) -> Filter | None:
        """The search filter of this query."""
        try:
            if self.filters is None:
                return None
            if isinstance(self.filters, Mapping):
                return filter_from_mapping(self.filters)
            return parse_filter(self.filters)
        except (ClipyError, TypeError, ValueError) as exc:
            raise InputError(f"query {self.id!r}: bad filters: {exc}") from None

    def relevance_filter(self) -> Filter | None:
        """The metadata rule as a filter (``None`` for id relevance)."""
        if self.relevant_rule is None:
            return None
        try:
            return filter_from_mapping(self.relevant_rule)
        except (ClipyError, TypeError, ValueError) as exc:
            raise InputError(f"query {self.id!r}: bad relevance rule: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """The JSONL form (keys with default values left out)."""
        out: dict[str, Any] = {"id": self.id, "set": self.set}
        if self.text is not None:
            out["text"] = self.text
        if self.image is not None:
            out["image"] = self.image
        if self.filters is not None:
            out["filters"] = (
                dict(self.filters) if isinstance(self.filters, Mapping) else list(self.filters)
            )
        if self.exclude:
            out["exclude"] = list(self.exclude)
        out["relevant"] = (
            list(self.relevant_ids)
            if self.relevant_ids is not None
            else dict(self.relevant_rule or {})
        )
        if self.gallery is not None:
            out["gallery"] = self.gallery
        return out


def query_from_json(obj: Any, *, base_dir: Path | None = None) -> EvalQuery:
    """Build a query from its JSON object; raises :class:`InputError` (without location)."""
    if not isinstance(obj, dict):
        raise InputError("a query must be a JSON object")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise InputError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}"
        )
    qid = obj.get("id")
    if not isinstance(qid, str | int) or isinstance(qid, bool) or str(qid) == "":
        raise InputError("'id' must be a non-empty string")
    text, image = obj.get("text"), obj.get("image")
    for key, value in (("text", text), ("image", image), ("set", obj.get("set", "custom"))):
        if value is not None and not isinstance(value, str):
            raise InputError(f"{key!r} must be a string")
    if image and not image.startswith(PRODUCT_REF) and base_dir is not None:
        image = str((base_dir / image) if not Path(image).is_absolute() else Path(image))
    filters = obj.get("filters")
    if filters is not None and not isinstance(filters, dict):
        if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
            raise InputError("'filters' must be an object or a list of 'field=value' strings")
        filters = tuple(filters)
    relevant = obj.get("relevant")
    relevant_ids: tuple[str, ...] | None = None
    relevant_rule: dict[str, Any] | None = None
    if isinstance(relevant, list):
        relevant_ids = tuple(str(r) for r in relevant)
    elif isinstance(relevant, dict):
        relevant_rule = relevant
    else:
        raise InputError("'relevant' must be a list of product ids or a metadata rule object")
    exclude = obj.get("exclude", [])
    if not isinstance(exclude, list):
        raise InputError("'exclude' must be a list of product ids")
    return EvalQuery(
        id=str(qid),
        set=str(obj.get("set", "custom")),
        text=text,
        image=image,
        filters=filters,
        relevant_ids=relevant_ids,
        relevant_rule=relevant_rule,
        exclude=tuple(str(e) for e in exclude),
        gallery=obj.get("gallery"),
    )


def read_queries(path: str | Path) -> list[EvalQuery]:
    """Read a JSONL query file (blank lines and ``#`` comment lines are skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such query file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read query file: {exc}") from None
    queries: list[EvalQuery] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        try:
            query = query_from_json(obj, base_dir=path.parent)
        except InputError as exc:
            raise InputError(f"{path}:{lineno}: {exc}") from None
        if query.id in seen:
            raise InputError(
                f"{path}:{lineno}: query id {query.id!r} repeats line {seen[query.id]}"
            )
        seen[query.id] = lineno
        queries.append(query)
    return queries


def read_query_files(paths: Iterable[str | Path]) -> list[EvalQuery]:
    """Read several query files; query ids must be unique across all of them."""
    out: list[EvalQuery] = []
    where: dict[str, Path] = {}
    for path in paths:
        for query in read_queries(path):
            if query.id in where:
                raise InputError(f"{path}: query id {query.id!r} also appears in {where[query.id]}")
            where[query.id] = Path(path)
            out.append(query)
    return out


def write_queries(queries: Iterable[EvalQuery], path: str | Path) -> Path:
    """Write queries as JSONL, one per line; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for query in queries:
            fh.write(json.dumps(query.to_json(), ensure_ascii=False) + "\n")
    return path


# -- generators -------------------------------------------------------------------------------


def _clean(value: Any) -> str:
    """A metadata value as a string; empty for missing / NA."""
    if value is None:
        return ""
    text = str(value).strip()
    return "" if text in ("", "NA", "nan", "None") else text


def _pid(product: Mapping[str, Any]) -> str:
    return str(product[PRODUCT_ID_KEY])


def _pool(
    products: Sequence[Mapping[str, Any]], heldout_only: bool, heldout: HeldoutRule | None
) -> list[Mapping[str, Any]]:
    """The products queries may be about (and, except known-item, the gallery), in id order."""
    rule = is_heldout if heldout is None else heldout
    pool = [p for p in products if not heldout_only or rule(_pid(p))]
    return sorted(pool, key=lambda p: (len(_pid(p)), _pid(p)))


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
    chosen.sort(key=lambda p: (len(_pid(p)), _pid(p)))
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
    chosen.sort(key=lambda p: (len(_pid(p)), _pid(p)))
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
    return {
        "known-item": known_item_queries(
            products, n=sizes.known_item, seed=seed, heldout_only=only, heldout=rule
        ),
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


def write_query_sets(sets: Mapping[str, Sequence[EvalQuery]], out_dir: str | Path) -> list[Path]:
    """Write ``<out_dir>/<name>.jsonl`` for each set; returns the paths."""
    out_dir = Path(out_dir)
    return [write_queries(queries, out_dir / f"{name}.jsonl") for name, queries in sets.items()]


__all__ = [
    "ATTRIBUTE",
    "CATEGORY_FIELDS",
    "COMPOSED",
    "IMAGE_TYPE",
    "IMAGE_TYPE_COLOUR",
    "KNOWN_ITEM",
    "PRODUCT_REF",
    "QUERY_FILES",
    "EvalQuery",
    "HeldoutRule",
    "QuerySetSizes",
    "attribute_queries",
    "category_queries",
    "composed_queries",
    "image_queries",
    "known_item_queries",
    "make_query_sets",
    "phrase_attributes",
    "query_from_json",
    "read_queries",
    "read_query_files",
    "write_queries",
    "write_query_sets",
]
