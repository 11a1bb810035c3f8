"""The query layer: correct and embed a text and/or image query, search every channel under
the same filter, fuse them, and explain every hit with each channel's score.

Channels. A product has a ``text`` vector (its text, embedded by the text tower) and an
``image`` vector (its image, by the image tower). A query has a vector for each channel:
the text query's embedding is searched against product ``text`` vectors and the image
query's against product ``image`` vectors; a query with only one of them uses it for both
channels (text→image is the cross-modal search the dual encoder is trained for).

Channels and fusion are :mod:`clipy_qdrant.retrieval`'s: the dense channels, the lexical
(BM25) channel of the query's words, and the exact weighted, RRF and DBSF fusions over them.

Spelling. On a store with the lexical channel, a query text is corrected against the catalog
vocabulary (:mod:`clipy_qdrant.spelling`) before it is encoded and before its lexical query
is built: every channel sees the corrected text. A catalog word or a code is never changed.
:meth:`Searcher.search_page` returns the correction with the hits; ``as_typed=True`` searches
the text as typed.

Query rules. A query that is a code and nothing else is searched without the text channel
where the lexical channel holds the code (:mod:`clipy_qdrant.query_rules`); the result says
which weights were used and why (``SearchResult.fusion`` and ``SearchResult.rule``).

More like this. ``like=PRODUCT_ID`` queries with the product's stored vectors (nothing is
re-encoded): its text vector on the text channel and its image vector on the image channel,
the product itself excluded. With a query text as well ("like this, but in red") the text's
embedding replaces the text channel while the product's image vector stays on the image
channel: the same composition as a text+image query.

Hubness correction. A text query searching product images (its ``image`` channel) scores
``cos - c_q * r_i`` where ``r_i`` is the product's stored hubness and ``c_q`` the query's
weight (:mod:`clipy_qdrant.hubness`). The engine returns candidates by cosine, so the bound
of that channel is ``last_cosine - c_q * min(r)``, which keeps weighted fusion exact.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import numpy as np

from clipy_qdrant.browse import (
    FACET_TYPES,
    FacetCount,
    ImageURL,
    ProductImage,
    check_diversity,
    check_fields,
    check_filter_fields,
    mmr,
    similarity_vectors,
)
from clipy_qdrant.encoders.base import Encoder, encode_queries
from clipy_qdrant.errors import (
    ConfigError,
    FilterError,
    InputError,
    StoreError,
    UnknownProductError,
)
from clipy_qdrant.filters import Filter, Match, parse_filter
from clipy_qdrant.fusion import FusionConfig
from clipy_qdrant.hubness import query_gate
from clipy_qdrant.lexical_store import LexicalIndex
from clipy_qdrant.query import ImageInput, QueryVectors, load_query_image
from clipy_qdrant.query_rules import QueryRule, code_only_fusion, code_rule_applies, fusion_weights
from clipy_qdrant.retrieval import Hit, Retriever, public_payload
from clipy_qdrant.spelling import Correction, is_code_query
from clipy_qdrant.split import SPLIT_FIELD
from clipy_qdrant.store.base import IMAGE, PRODUCT_ID_KEY, TEXT, StoredPoint, VectorStore
from clipy_qdrant.thumbnails import image_url_of

__all__ = [
    "FacetCount",
    "FusionConfig",
    "Hit",
    "ImageURL",
    "ProductImage",
    "QueryVectors",
    "SearchOptions",
    "SearchResult",
    "Searcher",
    "VectorSearchOptions",
    "load_query_image",
]


@dataclass
class SearchResult:
    """A page of hits and the spelling correction the query text got (``None``: no text, or
    a store without the lexical channel; ``correction.changed`` tells whether it changed),
    the fusion config the search used, and the query rule that set it (``None``: the weights
    asked for were used)."""

    hits: list[Hit]
    correction: Correction | None = None
    fusion: FusionConfig | None = None
    rule: QueryRule | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "hits": [h.to_dict() for h in self.hits],
            "correction": self.correction.to_json() if self.correction is not None else None,
            "weights": fusion_weights(self.fusion) if self.fusion is not None else None,
            "rule": self.rule.to_json() if self.rule is not None else None,
        }


class VectorSearchOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`Searcher.search_vectors`: what to search and how."""

    filters: Filter | Sequence[str] | None
    k: int
    offset: int
    fusion: FusionConfig | None
    exclude: Collection[str] | None
    diversity: float | None
    code_queries: bool | None


class SearchOptions(VectorSearchOptions, total=False):
    """The keyword arguments of :meth:`Searcher.search_page` and :meth:`Searcher.search`:
    those of :meth:`Searcher.search_vectors`, and how to make the query vectors."""

    like: str | None
    as_typed: bool


class Searcher:
    """Fused text/image/lexical search over a store. Build it once, query it many times."""

    def __init__(
        self,
        store: VectorStore,
        encoder: Encoder | None = None,
        *,
        candidates: int = 100,
        check_encoder: bool = True,
        hubness: float | None = None,
        spelling: bool = True,
        code_queries: bool = True,
    ) -> None:
        """``hubness`` is beta, the strength of the hubness correction for text queries
        (``0`` turns it off); ``None`` takes the encoder's ``default_hubness`` (1.0 for
        fashion-mini, where it is measured; 0 otherwise) when the store has hubness values.
        ``spelling`` corrects query texts against the catalog vocabulary (on a store with the
        lexical channel; a store without one has neither the channel nor the correction).
        ``code_queries`` applies the code-only rule (:mod:`clipy_qdrant.query_rules`)."""
        if candidates < 1:
            raise ConfigError(f"candidates must be >= 1 (got {candidates})")
        if hubness is not None and not (np.isfinite(hubness) and hubness >= 0):
            raise ConfigError(f"hubness must be a number >= 0 (got {hubness})")
        self.store = store
        self.encoder = encoder
        self.candidates = candidates
        if encoder is not None and check_encoder:
            store.check_encoder(encoder.info)
        self.hubness_info = store.hubness_info()
        if hubness is None:
            default = 0.0 if encoder is None else float(encoder.default_hubness)
            hubness = default if self.hubness_info is not None else 0.0
        elif hubness > 0 and self.hubness_info is None:
            raise ConfigError(
                f"store {store!r} has no hubness values (written by an older clipy, or an "
                "ingest stopped early); run `clipy ingest` again, or pass --hubness 0"
            )
        self.hubness = float(hubness)
        self._indexed: dict[str, str] | None = None
        #: The store's lexical channel (``None``: the store has none).
        self.lexical = LexicalIndex.open(store)
        self.spelling = spelling
        self.code_queries = code_queries
        self.retriever = Retriever(store, self.hubness_info)

    def preload(self) -> int:
        """Read each product's hubness and point id in one pass, which a fresh searcher's
        queries would otherwise read point by point (:meth:`Retriever.preload`), and with
        spelling on build the corrector's candidate index, which the first query with a word
        the catalog does not know would otherwise wait for (about 0.3 s at catalog scale);
        returns the products read (0 for a store too large to hold them)."""
        if self.lexical is not None and self.spelling:
            self.lexical.corrector.prepare()
        return self.retriever.preload()

    def correct(self, text: str) -> Correction | None:
        """The spelling correction of a query text (``None``: no lexical channel, or the
        correction is off)."""
        if self.lexical is None or not self.spelling:
            return None
        return self.lexical.correct(text)

    def indexed_fields(self) -> dict[str, str]:
        """The store's payload indexes ``{field: type}`` (read once): the fields that filters
        and facets may name."""
        if self._indexed is None:
            self._indexed = self.store.indexed_fields()
        return self._indexed

    def query_hubness(self, text: str | None) -> float:
        """``c_q`` for a text query searching images: beta times the word-count gate."""
        return self.hubness * query_gate(text) if self.hubness > 0 else 0.0

    def query_vectors(
        self,
        text: str | None,
        text_vec: np.ndarray | None,
        image_vec: np.ndarray | None,
        *,
        as_typed: bool = False,
    ) -> QueryVectors:
        """The :class:`QueryVectors` of a query from its embedded text and/or image: a query
        with only one of them uses it for both channels, and a text-only query gets the
        hubness correction that its length calls for. ``text`` is the query as typed: its
        correction (unless ``as_typed``) gives the lexical query, as it gave ``text_vec`` in
        :meth:`embed_many`."""
        if text_vec is None and image_vec is None:
            raise InputError("a query needs a text or an image vector")
        text_only = image_vec is None
        text_vec = image_vec if text_vec is None else text_vec
        image_vec = text_vec if image_vec is None else image_vec
        assert text_vec is not None and image_vec is not None  # checked above
        correction = None
        lexical = None
        code_only = False
        if text is not None and text.strip() and self.lexical is not None:
            correction = None if as_typed else self.correct(text)
            searched = correction.corrected if correction else text
            lexical = self.lexical.query(searched)
            code_only = len(lexical.vector) > 0 and is_code_query(searched)
        return QueryVectors(
            text=text_vec,
            image=image_vec,
            image_hubness=self.query_hubness(text) if text_only else 0.0,
            lexical=lexical,
            correction=correction,
            code_only=code_only,
        )

    # -- embedding -------------------------------------------------------------------------

    def _require_encoder(self) -> Encoder:
        if self.encoder is None:
            raise ConfigError("this Searcher has no encoder; pass query vectors instead")
        return self.encoder

    def embed(
        self, text: str | None = None, image: ImageInput | None = None, *, as_typed: bool = False
    ) -> QueryVectors:
        """Query vectors for a text, an image, or both (the text corrected unless
        ``as_typed``)."""
        return self.embed_many([text], [image], as_typed=as_typed)[0]

    def embed_many(
        self,
        texts: Sequence[str | None],
        images: Sequence[ImageInput | None],
        *,
        as_typed: bool = False,
    ) -> list[QueryVectors]:
        """Batched :meth:`embed` for parallel lists of texts and images (``None`` = absent).
        Each text is spelling-corrected (unless ``as_typed``) before it is encoded."""
        if len(texts) != len(images):
            raise ValueError("texts and images must have the same length")
        encoder = self._require_encoder()
        for i, (text, image) in enumerate(zip(texts, images, strict=True)):
            if (text is None or not str(text).strip()) and image is None:
                raise InputError(f"query {i + 1} has neither text nor image")
        text_idx = [i for i, t in enumerate(texts) if t is not None and str(t).strip()]
        image_idx = [i for i, im in enumerate(images) if im is not None]
        typed = {i: str(texts[i]) for i in text_idx}
        corrections = {i: None if as_typed else self.correct(typed[i]) for i in text_idx}
        encoded = [c.corrected if (c := corrections[i]) is not None else typed[i] for i in text_idx]
        text_vecs = encode_queries(encoder, encoded) if text_idx else np.empty((0, 0))
        image_vecs = (
            encoder.encode_images([load_query_image(images[i]) for i in image_idx])  # type: ignore[arg-type]
            if image_idx
            else np.empty((0, 0))
        )
        by_text = dict(zip(text_idx, text_vecs, strict=True))
        by_image = dict(zip(image_idx, image_vecs, strict=True))
        return [
            self.query_vectors(texts[i], by_text.get(i), by_image.get(i), as_typed=as_typed)
            for i in range(len(texts))
        ]

    # -- searching -------------------------------------------------------------------------

    def search(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        **options: Unpack[SearchOptions],
    ) -> list[Hit]:
        """Embed the query and return the ``k`` best products under ``filters``, skipping the
        first ``offset``: the hits of :meth:`search_page`, which takes the same arguments."""
        return self.search_page(text, image, **options).hits

    def search_page(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        *,
        like: str | None = None,
        as_typed: bool = False,
        **options: Unpack[VectorSearchOptions],
    ) -> SearchResult:
        """:meth:`search`, returning the hits with the spelling correction the text got (to
        show "showing results for …" and offer the search as typed).

        ``like`` is a stored product id to search like (see the module docstring; combines
        with ``text``, not with ``image``; raises ``UnknownProductError`` for an id not
        stored). ``as_typed`` searches the text without spelling correction. The other
        arguments are those of :meth:`search_vectors`.
        """
        if like is not None:
            if image is not None:
                raise ConfigError("a search is like a stored product or like an image, not both")
            query = self.like_vectors(like, text, as_typed=as_typed)
            options["exclude"] = {*(options.get("exclude") or ()), str(like)}
        else:
            query = self.embed(text, image, as_typed=as_typed)
        return self.search_vectors_page(query, **options)

    def like_vectors(
        self, product_id: str, text: str | None = None, *, as_typed: bool = False
    ) -> QueryVectors:
        """The query vectors of "more like ``product_id``": its stored text and image vectors,
        or with ``text``, the text's embedding (and lexical query) and the product's image
        vector."""
        stored = self._stored_product(product_id, with_vectors=True)
        if text is not None and text.strip():
            embedded = self.embed(text, as_typed=as_typed)
            return QueryVectors(
                text=embedded.text,
                image=stored.vectors[IMAGE],
                lexical=embedded.lexical,
                correction=embedded.correction,
                code_only=embedded.code_only,
            )
        return QueryVectors(text=stored.vectors[TEXT], image=stored.vectors[IMAGE])

    def search_vectors(
        self, query: QueryVectors, **options: Unpack[VectorSearchOptions]
    ) -> list[Hit]:
        """Search with precomputed query vectors: the hits of :meth:`search_vectors_page`."""
        return self.search_vectors_page(query, **options).hits

    def search_vectors_page(
        self,
        query: QueryVectors,
        *,
        filters: Filter | Sequence[str] | None = None,
        k: int = 10,
        offset: int = 0,
        fusion: FusionConfig | None = None,
        exclude: Collection[str] | None = None,
        diversity: float | None = None,
        code_queries: bool | None = None,
    ) -> SearchResult:
        """Search with precomputed query vectors: the ``k`` best products under ``filters``
        (and not in ``exclude``), skipping the first ``offset``, with the query's correction,
        the fusion used and the rule that set it. ``diversity`` in [0, 1] re-orders the
        results by MMR (0: fused order). ``code_queries`` turns the code-only rule on or off
        for this search (``None``: the searcher's setting)."""
        if offset < 0:
            raise ConfigError(f"offset must be >= 0 (got {offset})")
        check_diversity(diversity)
        total = offset + k
        depth = max(self.candidates, total) if diversity else total
        asked = fusion or FusionConfig()
        grid, rules = self.search_grid_rules(
            query, [asked], filters=filters, k=depth, exclude=exclude, code_queries=code_queries
        )
        hits, rule = grid[0], rules[0]
        if diversity and hits:
            ids = [h.product_id for h in hits]
            stored = {
                p.product_id: p.vectors
                for p in self.store.retrieve(ids, with_payload=False, with_vectors=True)
            }
            rows = similarity_vectors(
                {pid: stored[pid][TEXT] for pid in ids},
                {pid: stored[pid][IMAGE] for pid in ids},
                ids,
            )
            by_id = {h.product_id: h for h in hits}
            picks = mmr([(h.product_id, h.score) for h in hits], rows, diversity, total)
            hits = [by_id[pid] for pid, _ in picks]
        return SearchResult(
            hits[offset:total],
            query.correction,
            fusion=rule.fusion if rule is not None else asked,
            rule=rule,
        )

    def search_grid(
        self,
        query: QueryVectors,
        configs: Sequence[FusionConfig],
        *,
        filters: Filter | Sequence[str] | None = None,
        k: int = 10,
        exclude: Collection[str] | None = None,
    ) -> list[list[Hit]]:
        """One result list per fusion config; the channels are retrieved once for all (each
        config as the query rules set it, :meth:`search_grid_rules`)."""
        return self.search_grid_rules(query, configs, filters=filters, k=k, exclude=exclude)[0]

    def search_grid_rules(
        self,
        query: QueryVectors,
        configs: Sequence[FusionConfig],
        *,
        filters: Filter | Sequence[str] | None = None,
        k: int = 10,
        exclude: Collection[str] | None = None,
        code_queries: bool | None = None,
    ) -> tuple[list[list[Hit]], list[QueryRule | None]]:
        """:meth:`search_grid`, with the rule that set each config's weights (``None``: the
        config as given); ``code_queries`` as in :meth:`search_vectors_page`."""
        if k < 1:
            raise ConfigError(f"k must be >= 1 (got {k})")
        user_filter = _as_filter(filters)
        check_filter_fields(user_filter, self.indexed_fields())
        flt = _with_exclusions(user_filter, exclude)
        rules = self.query_rules(query, configs, flt, code_queries=code_queries)
        used = [
            rule.fusion if rule is not None else cfg
            for cfg, rule in zip(configs, rules, strict=True)
        ]
        return self.retriever.run(query, used, flt, k, self.candidates), rules

    def query_rules(
        self,
        query: QueryVectors,
        configs: Sequence[FusionConfig],
        flt: Filter | None,
        *,
        code_queries: bool | None = None,
    ) -> list[QueryRule | None]:
        """The rule that sets each config's weights for ``query`` (``None``: none does): the
        code-only rule where the query is a code, the rule is on, and the lexical channel
        returns a product under ``flt`` (one engine query, asked only then)."""
        rules: list[QueryRule | None] = [None] * len(configs)
        lq = query.lexical
        on = self.code_queries if code_queries is None else code_queries
        if not (on and query.code_only and lq is not None):
            return rules
        applies = [code_rule_applies(cfg) for cfg in configs]
        if not any(applies) or not self.store.search_lexical(lq.vector, 1, flt):
            return rules
        return [
            code_only_fusion(cfg) if a else None for cfg, a in zip(configs, applies, strict=True)
        ]

    # -- browsing --------------------------------------------------------------------------

    def count(self, filters: Filter | Sequence[str] | None = None) -> int:
        """How many products match ``filters``."""
        flt = _as_filter(filters)
        check_filter_fields(flt, self.indexed_fields())
        return self.store.count(flt)

    def facets(
        self,
        fields: Sequence[str] | None = None,
        filters: Filter | Sequence[str] | None = None,
        limit: int = 20,
    ) -> dict[str, list[FacetCount]]:
        """For each field, its ``limit`` most frequent values among the products matching
        ``filters``, count descending then value ascending (exact counts, by the engine).

        ``fields`` default to every indexed keyword, integer and bool field but the product
        id and the evaluation split; naming a field that is not indexed raises ``UnknownFieldError``, one indexed as
        text or float (no countable values) ``FilterError``.
        """
        if limit < 1:
            raise ConfigError(f"facet limit must be >= 1 (got {limit})")
        indexed = self.indexed_fields()
        flt = _as_filter(filters)
        check_filter_fields(flt, indexed)
        if fields is None:
            names = [
                f
                for f, kind in sorted(indexed.items())
                if kind in FACET_TYPES and f not in (PRODUCT_ID_KEY, SPLIT_FIELD)
            ]
        else:
            names = list(fields)
            check_fields(names, indexed)
            for name in names:
                if indexed[name] not in FACET_TYPES:
                    raise FilterError(
                        f"field {name!r} is indexed as {indexed[name]}; facets count keyword, "
                        "integer and bool fields"
                    )
        return {
            name: [FacetCount(v, c) for v, c in self.store.facet(name, flt, limit)]
            for name in names
        }

    def product(self, product_id: str) -> dict[str, Any]:
        """A stored product's metadata (its payload, with ``product_id``); raises
        ``UnknownProductError`` for an id not stored."""
        return public_payload(self._stored_product(product_id).payload)

    def product_image(self, product_id: str) -> ProductImage | ImageURL:
        """A stored product's picture: its catalog image URL where the metadata has one, else
        the thumbnail written at ingest (:mod:`clipy_qdrant.thumbnails`)."""
        url = image_url_of(self._stored_product(product_id).payload)
        if url is not None:
            return ImageURL(url)
        thumbnail = self.store.thumbnail(str(product_id))
        if thumbnail is None:
            raise StoreError(
                f"product {product_id} has no stored image; it was ingested without "
                "thumbnails: run `clipy ingest --force` again to write them"
            )
        return ProductImage(thumbnail.data, thumbnail.media_type)

    def _stored_product(self, product_id: str, *, with_vectors: bool = False) -> StoredPoint:
        found = self.store.retrieve([str(product_id)], with_payload=True, with_vectors=with_vectors)
        if not found:
            raise UnknownProductError(f"product {product_id!r} is not in store {self.store!r}")
        return found[0]


def _as_filter(filters: Filter | Sequence[str] | None) -> Filter | None:
    if filters is None or isinstance(filters, Filter):
        return filters or None
    if isinstance(filters, str):
        return parse_filter([filters])
    return parse_filter(filters)


def _with_exclusions(flt: Filter | None, exclude: Collection[str] | None) -> Filter | None:
    if not exclude:
        return flt
    excluded = Filter(must_not=(Match(PRODUCT_ID_KEY, tuple(str(pid) for pid in exclude)),))
    return excluded.and_(flt)
