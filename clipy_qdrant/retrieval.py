"""Per-channel retrieval and fusion of one query: the engine of :class:`~clipy_qdrant.search.Searcher`.

Channels. ``text`` and ``image`` are the dense channels (cosine of the query's vector for
that channel with the product's stored vector); ``lexical`` is BM25 of the query's words
over the product text (:mod:`clipy_qdrant.lexical`), seen by fusion as the normalised score
``bm25 / Σ idf·(k1+1)`` in ``[0, 1)``. Each channel's candidate list comes from the engine
under the same filter.

Exactness of ``weighted`` fusion (the threshold algorithm). Each channel returns its
``depth`` best candidates (each channel its own depth, ``candidates`` at first); the
products missing from one channel's list get their true scores for that channel from one
more engine query of that channel restricted to them (an exact search under a product-id
filter, limit = their number: the cosine of their stored vectors, or the BM25 of their
stored sparse vectors, a product holding no query word scoring 0). A product in no list
scores at most ``Σ w_c · bound_c``, where ``bound_c`` is the last score of channel ``c``'s
list (minus ``c_q · min(r)`` on a hubness-corrected image channel; for the lexical channel
its normalised score, and 0 when the list is shorter than ``depth``: every product holding a
query word is then in it). When the k-th fused score reaches that bound the top-k is exactly
the brute-force top-k; otherwise the lists are deepened one at a time and fused again, the
shallowest first and the cheapest of equals first (:meth:`Retriever.deepen`). A dense list
shorter than its ``depth`` holds every product matching the filter, so its candidates are
all of them. ``rrf`` and ``dbsf`` are defined on the candidate lists of depth ``candidates``.

Low-hubness list. With the store's low-hubness threshold ``t`` recorded (``HubnessInfo.low``)
a hubness-corrected image channel whose first bound (from ``min(r)``) leaves the top-k open
also searches the products of hubness below ``t``: a second image list of the same depth,
an exact search under the query's filter and ``hubness < t`` (a float payload index), kept
for the deeper rounds. A product in neither list either has ``r ≥ t`` and a cosine at most
the main list's last (``last - c_q · t``), or ``r < t`` and a cosine at most the low list's
last (``last_low - c_q · min(r)``); the image bound is the larger of the two, and ``last -
c_q · t`` alone when the low list holds every low-hubness product. Far tighter than ``last
- c_q · min(r)``, it ends the deepening rounds earlier; the top-k is the same. It relies on
every product with an image vector holding its hubness value, which a valid record
guarantees (an ingest marks the record stale before its first write).

Fused vector. On a store whose products hold the fused vector ``[t ; i ; r]``
(:mod:`clipy_qdrant.store.fused`), a weighted config with both dense channels is searched
with one query on it, ``[w_text·q_t ; w_image·q_i ; −w_image·c_q]``, whose score is the dense
part of the weighted score itself, hubness correction included: the threshold algorithm then
runs over two lists, that one and the lexical list (the lexical-only candidates' dense parts
from one exact query on the fused vector restricted to them, the bound ``last_dense +
w_lexical · bound_lexical``, the lexical list deepened first while it is the shallower),
with no text or image list, restricted channel query or low-hubness list. The hits' text and
image scores are read for the top-k alone. RRF and DBSF, and weighted configs with one dense
channel at weight 0, take the channel lists.

Payloads. The channel queries return the product id (and on a hubness-corrected image
channel, the product's hubness) only; the payloads of the final hits are read with one
``retrieve``.

Hubness correction. A text query searching product images (its ``image`` channel) scores
``cos - c_q * r_i`` where ``r_i`` is the product's stored hubness and ``c_q`` the query's
weight (:mod:`clipy_qdrant.hubness`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipy_qdrant.errors import StoreError
from clipy_qdrant.filters import Filter, Match, Range
from clipy_qdrant.fusion import FusionConfig, dbsf_scores, rrf_scores, top_k, weighted_scores
from clipy_qdrant.lexical import LEXICAL
from clipy_qdrant.query import QueryVectors
from clipy_qdrant.store.base import (
    CONTENT_HASH_KEY,
    HUBNESS_KEY,
    IMAGE,
    LEXICAL_TEXT_KEY,
    PRODUCT_ID_KEY,
    TEXT,
    THUMBNAIL_KEY,
    ScoredPoint,
    StoredPoint,
    VectorStore,
)
from clipy_qdrant.store.fused import FUSED, fused_query
from clipy_qdrant.store.meta import HubnessInfo

CHANNELS: tuple[str, str, str] = (TEXT, IMAGE, LEXICAL)
#: RRF and DBSF lists walk this many times the store's HNSW beam (``Retriever.list_beam``):
#: at the default beam 128, RRF's recall@10 on the 5,000-product slice fell to 0.988 with
#: lists at 128 and is 0.99 or more at 256 (docs/experiments.md, "Search beam width").
RANK_FUSION_BEAM = 2
#: The fused vector's list walks the store's HNSW beam, and this many times it under a filter
#: (the graph walk skips the products that do not match and misses more of the rest) or for a
#: query whose text and image halves are different vectors (a text+image query: its halves
#: describe two things, where every stored vector's describe one product). On the full catalog,
#: the fused top-24 missed a better product in 7 of 200 lists under ``gender=Men`` at the
#: store's beam and 2 at twice it (the channel lists: 1), and for text+image queries in 2 of
#: 100 and 1, where the channel lists cost ten times the CPU (docs/experiments.md, "The fused
#: vector in search").
FUSED_WIDE_BEAM = 2
#: :meth:`Retriever.preload` reads the hubness and point ids of a store of at most this many
#: products (a few MB of maps); a larger store's maps fill as queries go.
PRELOAD_LIMIT = 250_000


@dataclass
class Hit:
    """One result: the fused score, each channel's score and the product payload.

    ``text_score`` is a cosine; ``image_score`` is the cosine minus ``image_penalty``, the
    hubness correction of a text query (0 for image queries or with the correction off);
    ``lexical_score`` is the normalised BM25 of the (corrected) query text, in ``[0, 1)``
    (0 without a query text or on a store without the lexical channel).
    """

    product_id: str
    score: float
    text_score: float
    image_score: float
    payload: dict[str, Any] = field(default_factory=dict)
    image_penalty: float = 0.0
    lexical_score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "score": self.score,
            "text_score": self.text_score,
            "image_score": self.image_score,
            "lexical_score": self.lexical_score,
            "image_penalty": self.image_penalty,
            "payload": self.payload,
        }


def weight_of(cfg: FusionConfig, channel: str) -> float:
    return {TEXT: cfg.w_text, IMAGE: cfg.w_image, LEXICAL: cfg.w_lexical}[channel]


@dataclass
class Channels:
    """Candidate lists of one query (lexical scores normalised), each channel's asked for
    ``depths[channel]`` candidates; ``low_hub`` is the low-hubness image list, at the image
    list's depth (``None`` when not searched, see the module docstring)."""

    depths: dict[str, int]
    lists: dict[str, list[ScoredPoint]]
    low_hub: list[ScoredPoint] | None = None

    def complete(self, channel: str) -> bool:
        """True when the channel returned every product it can (fewer than its depth)."""
        return len(self.lists[channel]) < self.depths[channel]


@dataclass
class QueryState:
    """What one query has learnt so far, shared by every fusion config of a grid: each
    channel's known scores, the channels whose list held every product it can (a product
    missing from such a lexical list holds no query word) and the payloads read for hits."""

    scores: dict[str, dict[str, float]] = field(
        default_factory=lambda: {channel: {} for channel in CHANNELS}
    )
    complete: set[str] = field(default_factory=set)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)

    def absorb(self, channels: Channels) -> None:
        for channel, points in channels.lists.items():
            known = self.scores[channel]
            for p in points:
                known.setdefault(p.product_id, p.score)
            if channels.complete(channel):
                self.complete.add(channel)
        known = self.scores[IMAGE]
        for p in channels.low_hub or ():
            known.setdefault(p.product_id, p.score)


class Retriever:
    """Searches a store's channels for one query and fuses them (see the module docstring)."""

    def __init__(self, store: VectorStore, hubness_info: HubnessInfo | None) -> None:
        self.store = store
        self.hubness_info = hubness_info
        #: Each product's hubness, read from its payload once: like ``hubness_info``, the
        #: values are taken as fixed while this retriever lives.
        self._hubness: dict[str, float] = {}

    def preload(self, limit: int = PRELOAD_LIMIT) -> int:
        """Read every product's hubness, and with it its point's product id (the store's map
        from the hits' point ids), in one scroll, so that the queries of a fresh searcher
        read neither point by point; a server does it before its first request. Returns the
        products read: 0 for a store of more than ``limit`` products, whose maps fill as
        queries go."""
        if self.store.count() > limit:
            return 0
        if self.hubness_info is None:  # the scroll alone fills the store's point-id map
            return sum(1 for _ in self.store.scroll(with_payload=False))
        return self._remember_hubness(self.store.scroll(with_payload=[HUBNESS_KEY]))

    def _remember_hubness(self, points: Iterable[StoredPoint]) -> int:
        """Keep the hubness of ``points`` (read with that payload key; the store's smallest
        for a product without one); returns how many there were."""
        assert self.hubness_info is not None
        lowest, read = self.hubness_info.minimum, 0
        for point in points:
            self._hubness[point.product_id] = float(point.payload.get(HUBNESS_KEY, lowest))
            read += 1
        return read

    def active(self, query: QueryVectors, cfg: FusionConfig) -> list[str]:
        """The channels ``cfg`` weighs that the query has (no lexical channel without words)."""
        return [c for c in CHANNELS if weight_of(cfg, c) > 0 and (c != LEXICAL or has_words(query))]

    def run(
        self,
        query: QueryVectors,
        configs: Sequence[FusionConfig],
        flt: Filter | None,
        k: int,
        candidates: int,
    ) -> list[list[Hit]]:
        """One result list of ``k`` hits per config; the channels are retrieved once for all
        (a channel that no config weighs is not searched: its scores are filled in for the
        hits only)."""
        on_fused = [self.uses_fused(query, cfg) for cfg in configs]
        searched = tuple(
            c
            for c in CHANNELS
            if any(
                c in self.active(query, g) and (c == LEXICAL or not f)
                for g, f in zip(configs, on_fused, strict=True)
            )
        )
        depths = dict.fromkeys(CHANNELS, max(candidates, k))
        base = self.retrieve(query, flt, depths, searched, ef=self.list_beam(configs))
        deep = base
        state = QueryState()
        state.absorb(base)
        results = []
        for cfg, fused in zip(configs, on_fused, strict=True):
            if fused:
                ranked = self.weighted_on_fused(query, flt, cfg, k, base, state)
            elif cfg.method == "weighted":
                while True:
                    ranked, exact = self.fuse_weighted(query, deep, cfg, k, state)
                    if exact:
                        break
                    deep = self.deepen(query, flt, deep, cfg)
                    state.absorb(deep)
            else:
                ranked = self.fuse_ranks(query, base, cfg, k, state)
            results.append(self.hits(query, ranked, state))
        return results

    def uses_fused(self, query: QueryVectors, cfg: FusionConfig) -> bool:
        """Whether ``cfg`` is searched on the fused vector: weighted fusion of both dense
        channels on a store whose products all hold it (see the module docstring)."""
        return (
            cfg.method == "weighted"
            and cfg.w_text > 0
            and cfg.w_image > 0
            and self.store.has_fused()
        )

    def weighted_on_fused(
        self,
        query: QueryVectors,
        flt: Filter | None,
        cfg: FusionConfig,
        k: int,
        base: Channels,
        state: QueryState,
    ) -> list[tuple[str, float]]:
        """The weighted top-k from the fused vector's list and ``base``'s lexical list: the
        threshold algorithm over two lists (see the module docstring), the dense part of a
        product's score read from its fused vector."""
        c_q = query.image_hubness if self.hubness_info is not None else 0.0
        vector = fused_query(query.text, query.image, cfg.w_text, cfg.w_image, c_q)
        w_lexical = cfg.w_lexical if LEXICAL in self.active(query, cfg) else 0.0
        depth, lex_depth = base.depths[TEXT], base.depths[LEXICAL]
        lex_list = base.lists[LEXICAL] if w_lexical > 0 else []
        two_things = not np.array_equal(query.text, query.image)
        ef = self.store.hnsw_ef * (FUSED_WIDE_BEAM if flt is not None or two_things else 1)
        dense_list = self.store.search(FUSED, vector, depth, flt, with_payload=False, ef=ef)
        dense = {p.product_id: p.score for p in dense_list}
        while True:
            ids = list(dict.fromkeys([*dense, *(p.product_id for p in lex_list)]))
            missing = [pid for pid in ids if pid not in dense]
            if missing:
                self.score_exactly(FUSED, vector, missing, dense)
            lexical = self.component_scores(query, LEXICAL, ids, state) if w_lexical > 0 else {}
            ranked = top_k({pid: dense[pid] + w_lexical * lexical.get(pid, 0.0) for pid in ids}, k)
            if len(dense_list) < depth:
                return ranked  # every product matching the filter is a candidate
            lex_open = w_lexical > 0 and len(lex_list) >= lex_depth
            bound = dense_list[-1].score + (w_lexical * lex_list[-1].score if lex_open else 0.0)
            if len(ranked) == k and ranked[-1][1] >= bound:
                return ranked
            if lex_open and lex_depth <= depth:  # the cheaper list first, as in ``deepen``
                lex_depth *= 2
                lex_list = self.channel_list(query, flt, LEXICAL, lex_depth, None)
                state.absorb(Channels({LEXICAL: lex_depth}, {LEXICAL: lex_list}))
            else:
                depth *= 2
                dense_list = self.store.search(FUSED, vector, depth, flt, with_payload=False, ef=ef)
                dense.update((p.product_id, p.score) for p in dense_list)

    def list_beam(self, configs: Sequence[FusionConfig]) -> int | None:
        """The HNSW beam of the first channel lists: the store's (``None``) when every config
        is weighted, whose threshold algorithm reads a list's head and bounds the rest;
        :data:`RANK_FUSION_BEAM` times it when RRF or DBSF reads the lists whole, down to
        their last rank, which a narrow beam misses more often."""
        if all(cfg.method == "weighted" for cfg in configs):
            return None
        return RANK_FUSION_BEAM * self.store.hnsw_ef

    def retrieve(
        self,
        query: QueryVectors,
        flt: Filter | None,
        depths: dict[str, int],
        channels: Sequence[str],
        *,
        ef: int | None = None,
    ) -> Channels:
        """Each of ``channels``' lists of ``depths[channel]`` candidates (the others empty),
        the dense ones walking a beam of ``ef`` (``None``: the store's)."""
        lists = {
            c: self.channel_list(query, flt, c, depths[c], ef) if c in channels else []
            for c in CHANNELS
        }
        return Channels(depths=dict(depths), lists=lists)

    def channel_list(
        self, query: QueryVectors, flt: Filter | None, channel: str, depth: int, ef: int | None
    ) -> list[ScoredPoint]:
        """The channel's ``depth`` best products under ``flt``, best first."""
        if channel == LEXICAL:
            assert query.lexical is not None  # has_words
            lq = query.lexical
            raw = self.store.search_lexical(lq.vector, depth, flt)
            return [ScoredPoint(p.product_id, lq.normalise(p.score), None) for p in raw]
        return self.store.search(
            channel, query.for_channel(channel), depth, flt, with_payload=False, ef=ef
        )

    def deepen(
        self,
        query: QueryVectors,
        flt: Filter | None,
        channels: Channels,
        cfg: FusionConfig,
    ) -> Channels:
        """Longer lists for a weighted top-k that the bound leaves open, one step at a time,
        each lowering one part of the bound: the shallowest of ``cfg``'s lists that can still
        grow goes to twice its depth, the cheapest first when they tie (the lexical list: one
        sparse query; then text; then image, whose low-hubness list follows it). On a
        hubness-corrected image channel with a threshold recorded, the low-hubness list (one
        exact query over a tenth of the store) comes before the first dense step. Every step
        makes a list longer or adds one, so the rounds end: at the latest when a dense list
        holds every product under the filter."""
        active = self.active(query, cfg)
        growing = [c for c in (LEXICAL, TEXT, IMAGE) if c in active and not channels.complete(c)]
        shallowest = min(channels.depths[c] for c in growing)
        channel = next(c for c in growing if channels.depths[c] == shallowest)
        low_open = self.low_threshold(query) is not None and IMAGE in active
        if channel != LEXICAL and channels.low_hub is None and low_open:
            return self.with_low_hub(query, flt, channels)
        depth = 2 * shallowest
        lists = {**channels.lists, channel: self.channel_list(query, flt, channel, depth, None)}
        found = Channels({**channels.depths, channel: depth}, lists, channels.low_hub)
        if channel == IMAGE and channels.low_hub is not None:
            return self.with_low_hub(query, flt, found)
        return found

    def with_low_hub(self, query: QueryVectors, flt: Filter | None, channels: Channels) -> Channels:
        """``channels`` with the low-hubness image list, as deep as the image list: the products
        under ``flt`` whose hubness is below the store's threshold, best cosine first. It is an
        exact search (the float index on ``hubness`` selects the band, a small fraction of
        the store, and every product in it is scored), asked for only when the bound with
        the smallest hubness alone leaves the top-k open."""
        low = self.low_threshold(query)
        assert low is not None
        low_filter = Filter(must=(Range(HUBNESS_KEY, lt=low),)).and_(flt)
        low_hub = self.store.search(
            IMAGE,
            query.for_channel(IMAGE),
            channels.depths[IMAGE],
            low_filter,
            with_payload=False,
            exact=True,
        )
        return Channels(depths=channels.depths, lists=channels.lists, low_hub=low_hub)

    def low_threshold(self, query: QueryVectors) -> float | None:
        """The low-hubness threshold for a hubness-corrected query (``None``: no second list,
        with the correction off or a store that records none)."""
        if query.image_hubness <= 0 or self.hubness_info is None:
            return None
        return self.hubness_info.low

    def component_scores(
        self, query: QueryVectors, channel: str, ids: Collection[str], state: QueryState
    ) -> dict[str, float]:
        """True scores of ``ids`` on ``channel``: from a candidate list where known, else from
        one engine query restricted to the missing ones (:meth:`missing_scores`)."""
        known = state.scores[channel]
        missing = [pid for pid in ids if pid not in known]
        if missing:
            self.missing_scores(query, channel, missing, state)
        return {pid: known[pid] for pid in ids}

    def missing_scores(
        self, query: QueryVectors, channel: str, missing: Sequence[str], state: QueryState
    ) -> None:
        """Score ``missing`` on ``channel`` with one exact engine query under a filter on their
        product ids (limit: their number). A product the lexical query does not return holds
        none of its words and scores 0; a lexical list that held every product it could
        leaves nothing to ask for."""
        known = state.scores[channel]
        if channel == LEXICAL:
            lq = query.lexical
            if lq is not None and len(lq.vector) > 0 and LEXICAL not in state.complete:
                restrict = Filter(must=(Match(PRODUCT_ID_KEY, tuple(missing)),))
                for p in self.store.search_lexical(lq.vector, len(missing), restrict):
                    known[p.product_id] = lq.normalise(p.score)
            for pid in missing:
                known.setdefault(pid, 0.0)
            return
        self.score_exactly(channel, query.for_channel(channel), missing, known)

    def score_exactly(
        self, using: str, vector: np.ndarray, missing: Sequence[str], known: dict[str, float]
    ) -> None:
        """Add to ``known`` the scores of ``missing`` on vector ``using``: one exact engine
        query under a filter on their product ids (limit: their number)."""
        restrict = Filter(must=(Match(PRODUCT_ID_KEY, tuple(missing)),))
        for p in self.store.search(
            using, vector, len(missing), restrict, with_payload=False, exact=True
        ):
            known[p.product_id] = p.score
        lost = [pid for pid in missing if pid not in known]
        if lost:
            raise StoreError(
                f"store {self.store!r}: {len(lost)} candidate product(s) have no {using} "
                f"vector, e.g. {lost[:3]}; was the store changed during the search?"
            )

    def penalties(self, query: QueryVectors, ids: Collection[str]) -> dict[str, float]:
        """``c_q * r_i`` of the image channel for ``ids`` (a product without a hubness value
        gets the store's smallest)."""
        if query.image_hubness <= 0 or self.hubness_info is None:
            return dict.fromkeys(ids, 0.0)
        hubness = self.hubness_of(ids)
        return {pid: query.image_hubness * hubness[pid] for pid in ids}

    def hubness_of(self, ids: Collection[str]) -> dict[str, float]:
        """The stored hubness ``r_i`` of ``ids``, the payloads of those not read yet read in
        one ``retrieve`` (the store's smallest for a product without one)."""
        assert self.hubness_info is not None
        lowest = self.hubness_info.minimum
        unread = [pid for pid in ids if pid not in self._hubness]
        if unread:
            self._remember_hubness(self.store.retrieve(unread, with_payload=[HUBNESS_KEY]))
        return {pid: self._hubness.get(pid, lowest) for pid in ids}

    def channel_scores(
        self, query: QueryVectors, channel: str, ids: Collection[str], state: QueryState
    ) -> dict[str, float]:
        """The scores fusion sees: the cosine (minus the hubness penalty on the image channel)
        or the normalised BM25."""
        scores = self.component_scores(query, channel, ids, state)
        if channel != IMAGE:
            return scores
        penalty = self.penalties(query, ids)
        return {pid: score - penalty[pid] for pid, score in scores.items()}

    def channel_bound(self, query: QueryVectors, channels: Channels, channel: str) -> float:
        """An upper bound of the channel score of any product not in the channel's list."""
        if channel == LEXICAL and channels.complete(channel):
            return 0.0  # every product holding a query word is in the list
        last = channels.lists[channel][-1].score
        if channel != IMAGE or query.image_hubness <= 0 or self.hubness_info is None:
            return last
        c_q, lowest, low = query.image_hubness, self.hubness_info.minimum, self.hubness_info.low
        low_hub = channels.low_hub
        if low is None or low_hub is None:
            return last - c_q * lowest
        if len(low_hub) < channels.depths[IMAGE]:
            return last - c_q * low  # every product of hubness below ``low`` is a candidate
        return max(min(low_hub[-1].score, last) - c_q * lowest, last - c_q * low)

    def fuse_weighted(
        self,
        query: QueryVectors,
        channels: Channels,
        cfg: FusionConfig,
        k: int,
        state: QueryState,
    ) -> tuple[list[tuple[str, float]], bool]:
        active = self.active(query, cfg)
        candidates: set[str] = set()
        for channel in active:
            candidates.update(p.product_id for p in channels.lists[channel])
        if IMAGE in active and channels.low_hub:
            candidates.update(p.product_id for p in channels.low_hub)
        component = {c: self.channel_scores(query, c, candidates, state) for c in active}
        for channel in CHANNELS:  # a zero-weight channel contributes nothing to the rank
            component.setdefault(channel, dict.fromkeys(candidates, 0.0))
        fused = weighted_scores(
            component[TEXT],
            component[IMAGE],
            cfg.w_text,
            cfg.w_image,
            component[LEXICAL],
            cfg.w_lexical if LEXICAL in active else 0.0,
        )
        ranked = top_k(fused, k)
        if any(channels.complete(c) for c in active if c != LEXICAL):
            return ranked, True  # every product matching the filter is a candidate
        bound = sum(weight_of(cfg, c) * self.channel_bound(query, channels, c) for c in active)
        exact = len(ranked) == k and ranked[-1][1] >= bound
        return ranked, exact

    def fuse_ranks(
        self,
        query: QueryVectors,
        channels: Channels,
        cfg: FusionConfig,
        k: int,
        state: QueryState,
    ) -> list[tuple[str, float]]:
        lists = {c: [(p.product_id, p.score) for p in channels.lists[c]] for c in CHANNELS}
        image = lists[IMAGE]
        if query.image_hubness > 0 and image:
            # The candidate list re-ranked by the corrected score (stable for ties).
            corrected = self.channel_scores(query, IMAGE, [pid for pid, _ in image], state)
            lists[IMAGE] = sorted(((pid, corrected[pid]) for pid, _ in image), key=lambda x: -x[1])
        active = self.active(query, cfg)
        weights = [weight_of(cfg, c) if c in active else 0.0 for c in CHANNELS]
        scored = [lists[c] for c in CHANNELS]
        if cfg.method == "rrf":
            fused = rrf_scores(scored, weights, cfg.rrf_k)
        else:
            fused = dbsf_scores(scored, weights)
        return top_k(fused, k)

    def hits(
        self, query: QueryVectors, ranked: list[tuple[str, float]], state: QueryState
    ) -> list[Hit]:
        ids = [pid for pid, _ in ranked]
        text = self.component_scores(query, TEXT, ids, state)
        image = self.component_scores(query, IMAGE, ids, state)
        lexical = (
            self.component_scores(query, LEXICAL, ids, state)
            if has_words(query)
            else dict.fromkeys(ids, 0.0)
        )
        penalty = self.penalties(query, ids)
        unread = [pid for pid in ids if pid not in state.payloads]
        for point in self.store.retrieve(unread, with_payload=True) if unread else ():
            state.payloads[point.product_id] = point.payload
        return [
            Hit(
                product_id=pid,
                score=score,
                text_score=text[pid],
                image_score=image[pid] - penalty[pid],
                payload=public_payload(state.payloads.get(pid, {})),
                image_penalty=penalty[pid],
                lexical_score=lexical[pid],
            )
            for pid, score in ranked
        ]


def has_words(query: QueryVectors) -> bool:
    """True when the query has a lexical query with at least one term."""
    return query.lexical is not None and len(query.lexical.vector) > 0


def public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload without the store's own keys (hash, hubness, thumbnail, lexical text)."""
    return {
        key: value
        for key, value in payload.items()
        if key not in (CONTENT_HASH_KEY, HUBNESS_KEY, THUMBNAIL_KEY, LEXICAL_TEXT_KEY)
    }


__all__ = ["CHANNELS", "Channels", "Hit", "QueryState", "Retriever", "has_words", "public_payload"]
