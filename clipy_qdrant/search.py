"""The query layer: embed a text and/or image query, search both named vectors under the
same filter, fuse the two channels, and explain every hit with both component scores.

Channels. A product has a ``text`` vector (its text, embedded by the text tower) and an
``image`` vector (its image, by the image tower). A query has a vector for each channel:
the text query's embedding is searched against product ``text`` vectors and the image
query's against product ``image`` vectors; a query with only one of them uses it for both
channels (text→image is the cross-modal search the dual encoder is trained for).

Exactness of ``weighted`` fusion. Each channel returns its ``depth`` best candidates; a
product missing from one list gets its true score for that channel from its stored vector.
A product in neither list scores at most ``w_text * last_text + w_image * last_image``
(the threshold algorithm's bound), so when the k-th fused score reaches that bound the
top-k is exactly the brute-force top-k; otherwise the lists are deepened and fused again.
``rrf`` and ``dbsf`` are defined on the candidate lists of depth ``candidates``.

Pages. Results are ordered by fused score, ties by product id, so ``offset=10, k=10`` is
items 10..19 of ``k=20`` for every fusion method (the candidate depth is
``max(candidates, offset + k)`` either way). With ``diversity`` the fused top
``max(candidates, offset + k)`` are re-ordered by MMR (:mod:`clipy_qdrant.browse`) and the page
is cut from that order; pages agree with each other while ``offset + k <= candidates``.

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
from dataclasses import dataclass, field
from typing import Any

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
from clipy_qdrant.encoders.base import Encoder
from clipy_qdrant.errors import (
    ConfigError,
    FilterError,
    InputError,
    StoreError,
    UnknownProductError,
)
from clipy_qdrant.filters import Filter, Match, parse_filter
from clipy_qdrant.fusion import FusionConfig, dbsf_scores, rrf_scores, top_k, weighted_scores
from clipy_qdrant.hubness import query_gate
from clipy_qdrant.query import ImageInput, QueryVectors, load_query_image
from clipy_qdrant.split import SPLIT_FIELD
from clipy_qdrant.store.base import (
    CONTENT_HASH_KEY,
    HUBNESS_KEY,
    IMAGE,
    PRODUCT_ID_KEY,
    TEXT,
    THUMBNAIL_KEY,
    ScoredPoint,
    StoredPoint,
    VectorStore,
)
from clipy_qdrant.thumbnails import image_url_of

__all__ = [
    "FacetCount",
    "FusionConfig",
    "Hit",
    "ImageURL",
    "ProductImage",
    "QueryVectors",
    "Searcher",
    "load_query_image",
]


@dataclass
class Hit:
    """One result: the fused score, both component scores and the product payload.

    ``text_score`` is a cosine; ``image_score`` is the cosine minus ``image_penalty``, the
    hubness correction of a text query (0 for image queries or with the correction off).
    """

    product_id: str
    score: float
    text_score: float
    image_score: float
    payload: dict[str, Any] = field(default_factory=dict)
    image_penalty: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "score": self.score,
            "text_score": self.text_score,
            "image_score": self.image_score,
            "image_penalty": self.image_penalty,
            "payload": self.payload,
        }


@dataclass
class _Channels:
    """Candidate lists of one query at one depth."""

    depth: int
    lists: dict[str, list[ScoredPoint]]

    def complete(self, channel: str) -> bool:
        """True when the channel returned every matching product (fewer than ``depth``)."""
        return len(self.lists[channel]) < self.depth


@dataclass
class _QueryState:
    """What one query has learnt so far, shared by every fusion config of a grid."""

    scores: dict[str, dict[str, float]] = field(default_factory=lambda: {TEXT: {}, IMAGE: {}})
    vectors: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)

    def absorb(self, channels: _Channels) -> None:
        for channel, points in channels.lists.items():
            known = self.scores[channel]
            for p in points:
                known.setdefault(p.product_id, p.score)
                if p.payload is not None:
                    self.payloads.setdefault(p.product_id, p.payload)


class Searcher:
    """Fused text/image search over a store. Build it once, query it many times."""

    def __init__(
        self,
        store: VectorStore,
        encoder: Encoder | None = None,
        *,
        candidates: int = 100,
        check_encoder: bool = True,
        hubness: float | None = None,
    ) -> None:
        """``hubness`` is beta, the strength of the hubness correction for text queries
        (``0`` turns it off); ``None`` takes the encoder's ``default_hubness`` (1.0 for
        fashion-mini, where it is measured; 0 otherwise) when the store has hubness values."""
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
        self, text: str | None, text_vec: np.ndarray | None, image_vec: np.ndarray | None
    ) -> QueryVectors:
        """The :class:`QueryVectors` of a query from its embedded text and/or image: a query
        with only one of them uses it for both channels, and a text-only query gets the
        hubness correction that its length calls for."""
        if text_vec is None and image_vec is None:
            raise InputError("a query needs a text or an image vector")
        text_only = image_vec is None
        text_vec = image_vec if text_vec is None else text_vec
        image_vec = text_vec if image_vec is None else image_vec
        assert text_vec is not None and image_vec is not None  # checked above
        return QueryVectors(
            text=text_vec,
            image=image_vec,
            image_hubness=self.query_hubness(text) if text_only else 0.0,
        )

    # -- embedding -------------------------------------------------------------------------

    def _require_encoder(self) -> Encoder:
        if self.encoder is None:
            raise ConfigError("this Searcher has no encoder; pass query vectors instead")
        return self.encoder

    def embed(self, text: str | None = None, image: ImageInput | None = None) -> QueryVectors:
        """Query vectors for a text, an image, or both."""
        return self.embed_many([text], [image])[0]

    def embed_many(
        self, texts: Sequence[str | None], images: Sequence[ImageInput | None]
    ) -> list[QueryVectors]:
        """Batched :meth:`embed` for parallel lists of texts and images (``None`` = absent)."""
        if len(texts) != len(images):
            raise ValueError("texts and images must have the same length")
        encoder = self._require_encoder()
        for i, (text, image) in enumerate(zip(texts, images, strict=True)):
            if (text is None or not str(text).strip()) and image is None:
                raise InputError(f"query {i + 1} has neither text nor image")
        text_idx = [i for i, t in enumerate(texts) if t is not None and str(t).strip()]
        image_idx = [i for i, im in enumerate(images) if im is not None]
        text_vecs = (
            encoder.encode_texts([str(texts[i]) for i in text_idx])
            if text_idx
            else np.empty((0, 0))
        )
        image_vecs = (
            encoder.encode_images([load_query_image(images[i]) for i in image_idx])  # type: ignore[arg-type]
            if image_idx
            else np.empty((0, 0))
        )
        by_text = dict(zip(text_idx, text_vecs, strict=True))
        by_image = dict(zip(image_idx, image_vecs, strict=True))
        return [
            self.query_vectors(texts[i], by_text.get(i), by_image.get(i)) for i in range(len(texts))
        ]

    # -- searching -------------------------------------------------------------------------

    def search(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        *,
        like: str | None = None,
        filters: Filter | Sequence[str] | None = None,
        k: int = 10,
        offset: int = 0,
        fusion: FusionConfig | None = None,
        exclude: Collection[str] | None = None,
        diversity: float | None = None,
    ) -> list[Hit]:
        """Embed the query and return the ``k`` best products under ``filters``, skipping the
        first ``offset``.

        ``like`` is a stored product id to search like (see the module docstring; combines
        with ``text``, not with ``image``; raises ``UnknownProductError`` for an id not
        stored). ``diversity`` in [0, 1] re-orders the results by MMR (0: fused order).
        """
        if like is not None:
            if image is not None:
                raise ConfigError("a search is like a stored product or like an image, not both")
            query = self.like_vectors(like, text)
            exclude = {*(exclude or ()), str(like)}
        else:
            query = self.embed(text, image)
        return self.search_vectors(
            query,
            filters=filters,
            k=k,
            offset=offset,
            fusion=fusion,
            exclude=exclude,
            diversity=diversity,
        )

    def like_vectors(self, product_id: str, text: str | None = None) -> QueryVectors:
        """The query vectors of "more like ``product_id``": its stored text and image vectors,
        or with ``text``, the text's embedding and the product's image vector."""
        stored = self._stored_product(product_id, with_vectors=True)
        text_vec = stored.vectors[TEXT]
        if text is not None and text.strip():
            text_vec = self.embed(text).text
        return QueryVectors(text=text_vec, image=stored.vectors[IMAGE])

    def search_vectors(
        self,
        query: QueryVectors,
        *,
        filters: Filter | Sequence[str] | None = None,
        k: int = 10,
        offset: int = 0,
        fusion: FusionConfig | None = None,
        exclude: Collection[str] | None = None,
        diversity: float | None = None,
    ) -> list[Hit]:
        """Search with precomputed query vectors (``offset`` and ``diversity`` as in
        :meth:`search`)."""
        if offset < 0:
            raise ConfigError(f"offset must be >= 0 (got {offset})")
        check_diversity(diversity)
        total = offset + k
        depth = max(self.candidates, total) if diversity else total
        hits = self.search_grid(
            query, [fusion or FusionConfig()], filters=filters, k=depth, exclude=exclude
        )[0]
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
        return hits[offset:total]

    def search_grid(
        self,
        query: QueryVectors,
        configs: Sequence[FusionConfig],
        *,
        filters: Filter | Sequence[str] | None = None,
        k: int = 10,
        exclude: Collection[str] | None = None,
    ) -> list[list[Hit]]:
        """One result list per fusion config; the channels are retrieved once for all."""
        if k < 1:
            raise ConfigError(f"k must be >= 1 (got {k})")
        user_filter = _as_filter(filters)
        check_filter_fields(user_filter, self.indexed_fields())
        flt = _with_exclusions(user_filter, exclude)
        # A channel that no config weighs is not searched (its scores are filled in for the
        # hits only, from the stored vectors).
        channels = tuple(
            c
            for c in (TEXT, IMAGE)
            if any((cfg.w_text if c == TEXT else cfg.w_image) > 0 for cfg in configs)
        )
        base = self._retrieve(query, flt, max(self.candidates, k), channels)
        deep = base
        state = _QueryState()
        state.absorb(base)
        results = []
        for cfg in configs:
            if cfg.method == "weighted":
                while True:
                    ranked, exact = self._fuse_weighted(query, deep, cfg, k, state)
                    if exact:
                        break
                    deep = self._retrieve(query, flt, deep.depth * 2, channels)
                    state.absorb(deep)
            else:
                ranked = self._fuse_ranks(query, base, cfg, k, state)
            results.append(self._hits(query, ranked, state))
        return results

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
        return _public_payload(self._stored_product(product_id).payload)

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

    # -- internals -------------------------------------------------------------------------

    def _retrieve(
        self, query: QueryVectors, flt: Filter | None, depth: int, channels: Sequence[str]
    ) -> _Channels:
        lists = {
            channel: self.store.search(channel, query.for_channel(channel), depth, flt)
            if channel in channels
            else []
            for channel in (TEXT, IMAGE)
        }
        return _Channels(depth=depth, lists=lists)

    def _component_scores(
        self, query: QueryVectors, channel: str, ids: Collection[str], state: _QueryState
    ) -> dict[str, float]:
        """True cosine scores of ``ids`` on ``channel``: from a candidate list where known, else
        from the stored vectors (fetched once per query, scored in one matrix product)."""
        known = state.scores[channel]
        missing = [pid for pid in ids if pid not in known]
        if missing:
            to_fetch = [pid for pid in missing if pid not in state.vectors]
            if to_fetch:
                for point in self.store.retrieve(to_fetch, with_payload=True, with_vectors=True):
                    state.vectors[point.product_id] = point.vectors
                    state.payloads.setdefault(point.product_id, point.payload)
            matrix = np.stack([state.vectors[pid][channel] for pid in missing]).astype(np.float32)
            matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
            for pid, score in zip(missing, matrix @ query.for_channel(channel), strict=True):
                known[pid] = float(score)
        return {pid: known[pid] for pid in ids}

    def _penalties(
        self, query: QueryVectors, ids: Collection[str], state: _QueryState
    ) -> dict[str, float]:
        """``c_q * r_i`` of the image channel for ``ids`` (payloads known from the lists or
        fetched by :meth:`_component_scores`)."""
        if query.image_hubness <= 0 or self.hubness_info is None:
            return dict.fromkeys(ids, 0.0)
        missing = self.hubness_info.minimum
        return {
            pid: query.image_hubness * float(state.payloads.get(pid, {}).get(HUBNESS_KEY, missing))
            for pid in ids
        }

    def _channel_scores(
        self, query: QueryVectors, channel: str, ids: Collection[str], state: _QueryState
    ) -> dict[str, float]:
        """The scores fusion sees: the cosine, minus the hubness penalty on the image channel."""
        scores = self._component_scores(query, channel, ids, state)
        if channel != IMAGE:
            return scores
        penalty = self._penalties(query, ids, state)
        return {pid: score - penalty[pid] for pid, score in scores.items()}

    def _channel_bound(self, query: QueryVectors, channels: _Channels, channel: str) -> float:
        """An upper bound of the channel score of any product not in the channel's list."""
        last = channels.lists[channel][-1].score
        if channel == IMAGE and query.image_hubness > 0 and self.hubness_info is not None:
            return last - query.image_hubness * self.hubness_info.minimum
        return last

    def _fuse_weighted(
        self,
        query: QueryVectors,
        channels: _Channels,
        cfg: FusionConfig,
        k: int,
        state: _QueryState,
    ) -> tuple[list[tuple[str, float]], bool]:
        weights = {TEXT: cfg.w_text, IMAGE: cfg.w_image}
        active = [c for c in (TEXT, IMAGE) if weights[c] > 0]
        candidates: set[str] = set()
        for channel in active:
            candidates.update(p.product_id for p in channels.lists[channel])
        component = {c: self._channel_scores(query, c, candidates, state) for c in active}
        for channel in (TEXT, IMAGE):  # a zero-weight channel contributes nothing to the rank
            component.setdefault(channel, dict.fromkeys(candidates, 0.0))
        fused = weighted_scores(component[TEXT], component[IMAGE], cfg.w_text, cfg.w_image)
        ranked = top_k(fused, k)
        if any(channels.complete(c) for c in active):
            return ranked, True  # every matching product is a candidate
        bound = sum(weights[c] * self._channel_bound(query, channels, c) for c in active)
        exact = len(ranked) == k and ranked[-1][1] >= bound
        return ranked, exact

    def _fuse_ranks(
        self,
        query: QueryVectors,
        channels: _Channels,
        cfg: FusionConfig,
        k: int,
        state: _QueryState,
    ) -> list[tuple[str, float]]:
        text = [(p.product_id, p.score) for p in channels.lists[TEXT]]
        image = [(p.product_id, p.score) for p in channels.lists[IMAGE]]
        if query.image_hubness > 0 and image:
            # The candidate list re-ranked by the corrected score (stable for ties).
            corrected = self._channel_scores(query, IMAGE, [pid for pid, _ in image], state)
            image = sorted(((pid, corrected[pid]) for pid, _ in image), key=lambda x: -x[1])
        weights = (cfg.w_text, cfg.w_image)
        if cfg.method == "rrf":
            fused = rrf_scores(
                [[pid for pid, _ in text], [pid for pid, _ in image]], weights, cfg.rrf_k
            )
        else:
            fused = dbsf_scores([text, image], weights)
        return top_k(fused, k)

    def _hits(
        self, query: QueryVectors, ranked: list[tuple[str, float]], state: _QueryState
    ) -> list[Hit]:
        ids = [pid for pid, _ in ranked]
        text = self._component_scores(query, TEXT, ids, state)
        image = self._component_scores(query, IMAGE, ids, state)
        penalty = self._penalties(query, ids, state)
        return [
            Hit(
                product_id=pid,
                score=score,
                text_score=text[pid],
                image_score=image[pid] - penalty[pid],
                payload=_public_payload(state.payloads.get(pid, {})),
                image_penalty=penalty[pid],
            )
            for pid, score in ranked
        ]


def _public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in payload.items()
        if key not in (CONTENT_HASH_KEY, HUBNESS_KEY, THUMBNAIL_KEY)
    }


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
