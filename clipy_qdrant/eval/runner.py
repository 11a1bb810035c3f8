"""Run query sets through the :class:`~clipy_qdrant.search.Searcher` over a grid of fusion
settings, and A/B-test two settings.

How a run works:

1. The catalog payloads are read once from the store (``scroll``); relevance rules and
   filters are resolved against them (an inverted index for ``Match`` conditions, the
   reference :func:`clipy_qdrant.filters.matches` for the rest), so a rule's relevant set
   is exactly the products that satisfy it, its filters, and the gallery, minus ``exclude``.
2. Query vectors are computed in batches: texts and image files through the encoder,
   ``product:<id>`` images from the product's **stored** image vector. A query with only a
   text or only an image uses it for both channels, as :meth:`Searcher.embed` does.
3. Each distinct search (same vectors, filters, exclusions and gallery) runs once through
   :meth:`Searcher.search_grid` for all configs, so the two channels are retrieved once.
4. **Gallery.** A ``heldout`` gallery is a filter ``product_id ∈ held-out ids`` added to
   the query's own filters: the search itself sees only held-out products, so every config
   gets a full top-k from the same gallery (no post-filtering, no short lists).
5. Results are fetched to ``max(ks) + tie_margin`` and put in :func:`pessimistic_order`:
   a relevant product tied with others (equal fused score, or equal component scores on
   the channels the config weighs, which rank fusion would otherwise split arbitrarily)
   is ranked after them.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.encoders.base import Encoder
from clipy_qdrant.errors import ConfigError, InputError
from clipy_qdrant.eval.ab import ABReport, ab_compare
from clipy_qdrant.eval.catalog_queries import QuerySetSizes, make_query_sets
from clipy_qdrant.eval.grid import (
    config_key,
    image_share,
    parse_fusion_spec,
    weight_grid,
)
from clipy_qdrant.eval.metrics import (
    DEFAULT_KS,
    PRIMARY_METRIC,
    metric_names,
    pessimistic_order,
    score_query,
)
from clipy_qdrant.eval.photo_queries import PHOTO, ImageLoader, photo_queries
from clipy_qdrant.eval.queries import EvalQuery, Gallery, write_queries, write_query_sets
from clipy_qdrant.filters import Filter, Match, Range, matches
from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.search import Hit, QueryVectors, Searcher
from clipy_qdrant.split import HELDOUT, SPLIT_FIELD, SPLIT_RULE, is_heldout
from clipy_qdrant.store.base import IMAGE, PRODUCT_ID_KEY, VectorStore

# -- fusion settings ---------------------------------------------------------------------------


def training_split_rule(encoder: Encoder | None) -> str | None:
    """The held-out rule of the split the encoder was trained on (``Encoder.trained_split``);
    ``None`` for a general-purpose encoder or none at all."""
    return None if encoder is None else encoder.trained_split


def default_split(encoder: Encoder | None) -> Gallery:
    """``heldout`` when the encoder was trained on part of the catalog, else ``all``."""
    return "heldout" if training_split_rule(encoder) else "all"


def describe_split(split: Gallery, encoder: Encoder | None = None) -> str:
    """One line for reports: which products were searched and judged."""
    if split == "heldout":
        rule = training_split_rule(encoder) or SPLIT_RULE
        return f"held-out products only ({rule}); known-item queries search the whole catalog"
    return "all products (no held-out restriction)"


# -- relevance -------------------------------------------------------------------------------------


def _heldout_filter(store: VectorStore, catalog: Catalog) -> Filter:
    """Restrict a search to held-out products: one indexed keyword condition when ingest wrote
    the split field, else the list of held-out ids (correct, but slow on large catalogs)."""
    if store.indexed_fields().get(SPLIT_FIELD) == "keyword":
        return Filter(must=(Match(SPLIT_FIELD, (HELDOUT,)),))
    return Filter(must=(Match(PRODUCT_ID_KEY, tuple(sorted(catalog.heldout_ids))),))


def catalog_products(store: VectorStore) -> list[dict[str, Any]]:
    """Every stored product's payload, with ``product_id``."""
    return [{**p.payload, PRODUCT_ID_KEY: p.product_id} for p in store.scroll()]


class Catalog:
    """The catalog payloads with an inverted index, to resolve filters and rules quickly."""

    def __init__(self, products: Iterable[Mapping[str, Any]]) -> None:
        self.by_id: dict[str, Mapping[str, Any]] = {str(p[PRODUCT_ID_KEY]): p for p in products}
        self.all_ids: frozenset[str] = frozenset(self.by_id)
        self.heldout_ids: frozenset[str] = frozenset(p for p in self.by_id if is_heldout(p))
        self._index: dict[str, dict[Any, set[str]]] = defaultdict(lambda: defaultdict(set))
        for pid, payload in self.by_id.items():
            for name, value in payload.items():
                for v in value if isinstance(value, list) else (value,):
                    # An unhashable payload value (a dict) is never matched by a Match.
                    with contextlib.suppress(TypeError):
                        self._index[name][v].add(pid)
        self._cache: dict[str, frozenset[str]] = {}

    def gallery(self, gallery: Gallery) -> frozenset[str]:
        return self.heldout_ids if gallery == "heldout" else self.all_ids

    def _condition_ids(self, cond: Match | Range) -> set[str]:
        if isinstance(cond, Match):
            index = self._index.get(cond.field, {})
            out: set[str] = set()
            for value in cond.values:
                out |= index.get(value, set())
            return out
        only = Filter(must=(cond,))
        return {pid for pid, payload in self.by_id.items() if matches(only, payload)}

    def matching(self, flt: Filter | None) -> frozenset[str]:
        """Ids of the products that satisfy ``flt`` (same semantics as ``filters.matches``)."""
        if flt is None:
            return self.all_ids
        key = repr(flt)
        if key not in self._cache:
            ids = set(self.all_ids)
            for cond in flt.must:
                ids &= self._condition_ids(cond)
            for cond in flt.must_not:
                ids -= self._condition_ids(cond)
            self._cache[key] = frozenset(ids)
        return self._cache[key]


def primary_metric_for(ks: Iterable[int]) -> str:
    """:data:`PRIMARY_METRIC` (ndcg@10) when 10 is among ``ks``, else nDCG at the largest k."""
    ks = sorted(set(ks))
    return PRIMARY_METRIC if 10 in ks else f"ndcg@{ks[-1]}"


def resolve_relevant(
    query: EvalQuery, catalog: Catalog, gallery: Gallery, extra_filter: Filter | None = None
) -> frozenset[str]:
    """The products that count as correct for ``query``: its ids or rule, restricted to the
    products its filters (and ``extra_filter``) allow and to the gallery, minus its exclusions."""
    if query.relevant_ids is not None:
        ids: frozenset[str] = frozenset(query.relevant_ids) & catalog.all_ids
    else:
        ids = catalog.matching(query.relevance_filter())
    for flt in (query.filter(), extra_filter):
        if flt is not None:
            ids &= catalog.matching(flt)
    return (ids & catalog.gallery(gallery)) - frozenset(query.exclude)


def make_query_files(
    store: VectorStore,
    out_dir: str | Path,
    *,
    encoder: Encoder | None = None,
    seed: int = 0,
    heldout_only: bool | None = None,
    sizes: QuerySetSizes | None = None,
    load_images: ImageLoader | None = None,
) -> dict[str, Path]:
    """``clipy eval make-queries``: generate the five query kinds from the store's payloads and
    write ``<out_dir>/<kind>.jsonl``. ``heldout_only=None`` follows :func:`default_split` of
    ``encoder`` (held-out products when it was trained on part of the catalog). With
    ``load_images`` (the catalog's images by product id), also the shopper-photo sets:
    ``<out_dir>/photo/photo.jsonl`` beside the perturbed images, in a folder of their own so
    that ``<out_dir>/*.jsonl`` stays the five kinds above."""
    if heldout_only is None:
        heldout_only = default_split(encoder) == "heldout"
    products = catalog_products(store)
    sets = make_query_sets(products, seed=seed, heldout_only=heldout_only, sizes=sizes)
    paths = dict(zip(sets, write_query_sets(sets, out_dir), strict=True))
    if load_images is not None:
        folder = Path(out_dir) / PHOTO
        photos = photo_queries(
            products, load_images, folder, n=(sizes or QuerySetSizes()).photo, seed=seed
        )
        paths[PHOTO] = write_queries(photos, folder / f"{PHOTO}.jsonl")
    return paths


# -- results ---------------------------------------------------------------------------------------


@dataclass
class SetResult:
    """Per-query scores of one query set under every config."""

    name: str
    query_ids: list[str]
    metrics: list[str]
    configs: list[FusionConfig]
    scores: np.ndarray  # (n_configs, n_queries, n_metrics)
    galleries: dict[str, int] = field(default_factory=dict)  # gallery -> number of queries
    skipped: int = 0  # queries left out: nothing relevant in the gallery

    def means(self) -> np.ndarray:
        """``(n_configs, n_metrics)`` mean over queries."""
        if not self.query_ids:
            return np.full((len(self.configs), len(self.metrics)), np.nan)
        return self.scores.mean(axis=1)

    def mean_scores(self, config_index: int) -> dict[str, float]:
        return dict(zip(self.metrics, self.means()[config_index].tolist(), strict=True))

    def per_query(self, config_index: int) -> dict[str, dict[str, float]]:
        """``{qid: {metric: score}}`` under one config."""
        rows = self.scores[config_index]
        return {
            qid: dict(zip(self.metrics, rows[i].tolist(), strict=True))
            for i, qid in enumerate(self.query_ids)
        }

    def best(self, metric: str = PRIMARY_METRIC) -> tuple[int, float]:
        """Index of the best config by ``metric`` (first of equals) and its mean."""
        column = self.means()[:, self.metrics.index(metric)]
        if np.all(np.isnan(column)):
            return 0, float("nan")
        i = int(np.nanargmax(column))
        return i, float(column[i])


@dataclass
class EvalRun:
    """A grid run: per set, per config, per query scores, and how they were obtained."""

    configs: list[FusionConfig]
    ks: list[int]
    metrics: list[str]
    sets: dict[str, SetResult]
    split: Gallery
    split_description: str
    primary_metric: str = PRIMARY_METRIC
    encoder: str | None = None
    n_products: int = 0
    n_searches: int = 0
    seconds: float = 0.0
    #: Beta of the hubness correction of text queries searching images (0: off).
    hubness: float = 0.0


# -- running -----------------------------------------------------------------------------------


def _progress(iterable: Iterable[Any], total: int, desc: str, show: bool) -> Iterable[Any]:
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)


def _embed_batch(
    searcher: Searcher, queries: Sequence[EvalQuery], batch: list[str], kind: str
) -> list[QueryVectors]:
    """Embed a batch of texts or image paths; on failure, name the first query that fails."""
    none: list[None] = [None] * len(batch)
    try:
        return (
            searcher.embed_many(batch, none) if kind == "text" else searcher.embed_many(none, batch)
        )
    except InputError:
        for item in batch:
            try:
                searcher.embed_many([item], [None]) if kind == "text" else searcher.embed_many(
                    [None], [item]
                )
            except InputError as exc:
                qid = next(q.id for q in queries if (q.text if kind == "text" else q.image) == item)
                raise InputError(f"query {qid!r} ({kind} {item!r}): {exc}") from None
        raise


def _embed_queries(
    searcher: Searcher,
    store: VectorStore,
    queries: Sequence[EvalQuery],
    batch_size: int,
    show_progress: bool,
) -> dict[str, QueryVectors]:
    """Query vectors by query id: texts and image files encoded in batches, ``product:<id>``
    images taken from the store."""
    texts = sorted({q.text for q in queries if q.text})
    paths = sorted({q.image for q in queries if q.image and q.image_product is None})
    products = sorted({pid for q in queries if (pid := q.image_product) is not None})
    text_vecs: dict[str, np.ndarray] = {}
    image_vecs: dict[str, np.ndarray] = {}
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    for batch in _progress(batches, len(batches), "encoding query texts", show_progress):
        for text, qv in zip(batch, _embed_batch(searcher, queries, batch, "text"), strict=True):
            text_vecs[text] = qv.text
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        for path, qv in zip(batch, _embed_batch(searcher, queries, batch, "image"), strict=True):
            image_vecs[path] = qv.image
    for start in range(0, len(products), 1000):
        for point in store.retrieve(
            products[start : start + 1000], with_payload=False, with_vectors=True
        ):
            if IMAGE in point.vectors:
                image_vecs[f"product:{point.product_id}"] = np.asarray(point.vectors[IMAGE])
    out: dict[str, QueryVectors] = {}
    for q in queries:
        text_vec = text_vecs.get(q.text) if q.text else None
        image_vec = image_vecs.get(q.image) if q.image else None
        if q.image and image_vec is None:
            raise InputError(
                f"query {q.id!r}: {q.image} is not in the store (or has no image vector)"
            )
        out[q.id] = searcher.query_vectors(q.text, text_vec, image_vec)
    return out


def _evidence(hit: Hit, cfg: FusionConfig) -> tuple[float, ...]:
    """The component scores a config looks at: products equal on these are tied."""
    return tuple(
        score
        for score, weight in (
            (hit.text_score, cfg.w_text),
            (hit.image_score, cfg.w_image),
            (hit.lexical_score, cfg.w_lexical),
        )
        if weight > 0
    )


def run_eval(
    searcher: Searcher,
    queries: Sequence[EvalQuery],
    configs: Sequence[FusionConfig],
    *,
    ks: Iterable[int] = DEFAULT_KS,
    split: Gallery | None = None,
    filters: Filter | None = None,
    products: Sequence[Mapping[str, Any]] | None = None,
    tie_margin: int = 10,
    batch_size: int = 128,
    show_progress: bool = True,
    on_skip: Callable[[EvalQuery], None] | None = None,
) -> EvalRun:
    """Score every query under every config.

    ``split``: the gallery of queries that do not name one (``None``: ``heldout`` when the
    searcher's encoder was trained on part of the catalog, else ``all``). ``filters``: a filter
    added to every query (its search and its relevant set). ``products``: the
    catalog payloads (read from the store when ``None``). Queries with nothing relevant in
    their gallery are left out and counted as ``skipped``.
    """
    started = time.perf_counter()
    configs = list(configs)
    ks = sorted(set(ks))
    if not configs:
        raise ConfigError("no fusion settings to evaluate")
    if not queries:
        raise InputError("no queries to evaluate")
    if ks[0] < 1:
        raise ConfigError(f"k must be >= 1 (got {ks[0]})")
    ids = [q.id for q in queries]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"query id {dup!r} appears more than once")
    store = searcher.store
    split = split or default_split(searcher.encoder)
    catalog = Catalog(products if products is not None else catalog_products(store))
    if not catalog.all_ids:
        raise InputError("the store is empty; ingest the catalog before evaluating")

    # Relevance first: queries with nothing to find are not searched.
    kept: list[tuple[EvalQuery, Gallery, frozenset[str]]] = []
    skipped: dict[str, int] = defaultdict(int)
    for q in queries:
        gallery: Gallery = q.gallery or split
        relevant = resolve_relevant(q, catalog, gallery, filters)
        if relevant:
            kept.append((q, gallery, relevant))
        else:
            skipped[q.set] += 1
            if on_skip is not None:
                on_skip(q)
    vectors = _embed_queries(searcher, store, [q for q, _, _ in kept], batch_size, show_progress)

    heldout_filter = _heldout_filter(store, catalog)
    metrics = metric_names(ks)
    fetch = ks[-1] + tie_margin
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, (q, gallery, _) in enumerate(kept):
        filter_key = json.dumps(q.filters, sort_keys=True, default=list)
        key = (q.text, q.image, filter_key, tuple(sorted(q.exclude)), gallery)
        groups[key].append(i)
    per_query = np.zeros((len(kept), len(configs), len(metrics)))
    for members in _progress(groups.values(), len(groups), "searching", show_progress):
        q, gallery, _ = kept[members[0]]
        flt = q.filter()
        if filters is not None:
            flt = filters.and_(flt)
        if gallery == "heldout":
            flt = heldout_filter.and_(flt)
        results = searcher.search_grid(
            vectors[q.id], configs, filters=flt, k=fetch, exclude=q.exclude or None
        )
        for i in members:
            relevant = kept[i][2]
            for c, hits in enumerate(results):
                ranked = pessimistic_order(
                    [h.product_id for h in hits],
                    [h.score for h in hits],
                    relevant,
                    components=[_evidence(h, configs[c]) for h in hits],
                )
                scores = score_query(ranked, relevant, ks)
                per_query[i, c] = [scores[m] for m in metrics]

    by_set: dict[str, list[int]] = defaultdict(list)
    for i, (q, _, _) in enumerate(kept):
        by_set[q.set].append(i)
    set_names = list(dict.fromkeys([q.set for q in queries]))
    sets: dict[str, SetResult] = {}
    for name in set_names:
        rows = by_set.get(name, [])
        galleries: dict[str, int] = defaultdict(int)
        for i in rows:
            galleries[kept[i][1]] += 1
        sets[name] = SetResult(
            name=name,
            query_ids=[kept[i][0].id for i in rows],
            metrics=metrics,
            configs=configs,
            scores=per_query[rows].transpose(1, 0, 2)
            if rows
            else np.zeros((len(configs), 0, len(metrics))),
            galleries=dict(galleries),
            skipped=skipped.get(name, 0),
        )
    encoder = searcher.encoder
    return EvalRun(
        configs=configs,
        ks=ks,
        metrics=metrics,
        sets=sets,
        split=split,
        split_description=describe_split(split, encoder),
        primary_metric=primary_metric_for(ks),
        encoder=encoder.info.name if encoder is not None else None,
        n_products=len(catalog.all_ids),
        n_searches=len(groups),
        seconds=time.perf_counter() - started,
        hubness=searcher.hubness,
    )


# -- A/B ---------------------------------------------------------------------------------------------

#: Name of the pooled comparison over every query of every set.
ALL_SETS = "all"


@dataclass
class ABRun:
    """A against B on each query set (and pooled over all sets)."""

    a: FusionConfig
    b: FusionConfig
    reports: dict[str, ABReport]
    run: EvalRun


def run_ab(
    searcher: Searcher,
    queries: Sequence[EvalQuery],
    a: FusionConfig,
    b: FusionConfig,
    *,
    ks: Iterable[int] = DEFAULT_KS,
    split: Gallery | None = None,
    filters: Filter | None = None,
    products: Sequence[Mapping[str, Any]] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    show_progress: bool = True,
) -> ABRun:
    """Run the queries under ``a`` and ``b`` (one retrieval per query) and compare them per set
    with :func:`clipy_qdrant.eval.ab.ab_compare`; ``diff`` is B − A."""
    run = run_eval(
        searcher,
        queries,
        [a, b],
        ks=ks,
        split=split,
        products=products,
        show_progress=show_progress,
    )
    reports: dict[str, ABReport] = {}
    pooled_a: dict[str, dict[str, float]] = {}
    pooled_b: dict[str, dict[str, float]] = {}

    def compare(per_a: dict[str, dict[str, float]], per_b: dict[str, dict[str, float]]) -> ABReport:
        return ab_compare(
            per_a,
            per_b,
            label_a=a.label,
            label_b=b.label,
            primary_metric=run.primary_metric,
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        )

    for name, result in run.sets.items():
        if not result.query_ids:
            continue
        per_a, per_b = result.per_query(0), result.per_query(1)
        pooled_a.update(per_a)
        pooled_b.update(per_b)
        reports[name] = compare(per_a, per_b)
    if len(reports) > 1:
        reports[ALL_SETS] = compare(pooled_a, pooled_b)
    if not reports:
        raise InputError("no query has a relevant product in its gallery; nothing to compare")
    return ABRun(a=a, b=b, reports=reports, run=run)


__all__ = [
    "ALL_SETS",
    "ABRun",
    "Catalog",
    "EvalRun",
    "SetResult",
    "catalog_products",
    "config_key",
    "default_split",
    "describe_split",
    "image_share",
    "make_query_files",
    "parse_fusion_spec",
    "primary_metric_for",
    "resolve_relevant",
    "run_ab",
    "run_eval",
    "training_split_rule",
    "weight_grid",
]
