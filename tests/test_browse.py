"""Browsing a store on both backends (issue #16): more like this against the FAISS oracle,
facets against counting with the reference matcher, pages, MMR diversity against a brute-force
MMR, unknown filter fields, product lookup and product images."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fake_encoder import FakeEncoder
from oracle import Oracle, assert_same_topk, make_products
from PIL import Image

from clipy_qdrant.browse import FacetCount, ImageURL, ProductImage, mmr, similarity_vectors
from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.errors import (
    ClipyError,
    ConfigError,
    FilterError,
    StoreError,
    UnknownFieldError,
    UnknownProductError,
)
from clipy_qdrant.filters import Filter, Match, matches, parse_filter
from clipy_qdrant.fusion import FUSION_METHODS, FusionConfig, dbsf_scores, rrf_scores, top_k
from clipy_qdrant.search import QueryVectors, Searcher
from clipy_qdrant.store import PointRecord, Thumbnail, VectorStore, open_store
from clipy_qdrant.thumbnails import MAX_SIDE, make_thumbnail

N, DIM, K = 300, 32, 10
CANDIDATES = 25
ENCODER = EncoderInfo("fake", DIM)
INDEXED = {
    "gender": "keyword",
    "articleType": "keyword",
    "baseColour": "keyword",
    "season": "keyword",
    "year": "integer",
    "productDisplayName": "text",
}
CONFIGS = [
    FusionConfig("weighted", 0.5, 0.5),
    FusionConfig("weighted", 0.0, 1.0),
    FusionConfig("rrf", 1.0, 1.0, rrf_k=60),
    FusionConfig("dbsf", 0.25, 0.75),
]
FILTERS = [None, parse_filter(["gender=Men,Women"]), parse_filter(["year>=2012", "season!=Summer"])]


@pytest.fixture(scope="module")
def products() -> tuple[list[str], dict[str, np.ndarray], list[dict]]:
    ids, vectors, payloads = make_products(N, DIM, seed=11)
    # Some products share an image URL field; the rest get thumbnails.
    for i in range(0, N, 7):
        payloads[i]["image_url"] = f"https://img.example/{ids[i]}.jpg"
    return ids, vectors, payloads


@pytest.fixture(scope="module")
def oracle(products) -> Oracle:
    ids, vectors, payloads = products
    return Oracle(ids, vectors, [dict(p, product_id=i) for i, p in zip(ids, payloads, strict=True)])


def _fill(store: VectorStore, ids, vectors, payloads) -> VectorStore:
    store.ensure_collection(ENCODER, INDEXED)  # type: ignore[arg-type]
    store.upsert(
        [
            PointRecord(
                pid, {"image": vectors["image"][i], "text": vectors["text"][i]}, payloads[i]
            )
            for i, pid in enumerate(ids)
        ]
    )
    return store


@pytest.fixture(scope="module", params=["edge", "memory"])
def store(request, products, tmp_path_factory) -> Iterator[VectorStore]:
    if request.param == "edge":
        s = open_store(Path(tmp_path_factory.mktemp("edge")) / "store")
    else:
        s = open_store(url=":memory:", collection="browse")
    yield _fill(s, *products)
    s.close()


def _fused(oracle: Oracle, query: QueryVectors, flt: Filter | None, cfg: FusionConfig, k: int):
    """The brute-force ranking, as in tests/test_search.py."""
    if cfg.method == "weighted":
        text, image = oracle.scores("text", query.text), oracle.scores("image", query.image)
        fused = {
            pid: cfg.w_text * text[pid] + cfg.w_image * image[pid]
            for pid, payload in zip(oracle.ids, oracle.payloads, strict=True)
            if matches(flt, payload)
        }
        return top_k(fused, k)
    depth = max(CANDIDATES, k)
    text_list = oracle.search("text", query.text, depth, flt)
    image_list = oracle.search("image", query.image, depth, flt)
    weights = (cfg.w_text, cfg.w_image)
    if cfg.method == "rrf":
        return top_k(rrf_scores([text_list, image_list], weights, cfg.rrf_k), k)
    return top_k(dbsf_scores([text_list, image_list], weights), k)


def _pairs(hits) -> list[tuple[str, float]]:
    return [(h.product_id, h.score) for h in hits]


# -- more like this ----------------------------------------------------------------------


@pytest.mark.parametrize("flt", FILTERS, ids=["none", "any", "range+not"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.label)
def test_like_equals_the_oracle_without_the_product(store, oracle, products, cfg, flt) -> None:
    ids, vectors, _ = products
    searcher = Searcher(store, candidates=CANDIDATES)
    for row in (3, 150):
        pid = ids[row]
        hits = searcher.search(like=pid, filters=flt, k=K, fusion=cfg)
        query = QueryVectors(text=vectors["text"][row], image=vectors["image"][row])
        without = Filter(must_not=(Match("product_id", (pid,)),)).and_(flt)
        assert_same_topk(_pairs(hits), _fused(oracle, query, without, cfg, K))
        assert pid not in {h.product_id for h in hits}
        assert all(matches(flt, h.payload) for h in hits)


def test_like_with_text_puts_the_text_on_the_text_channel(products, tmp_path) -> None:
    ids, vectors, payloads = products
    encoder = FakeEncoder(DIM)
    store = _fill(open_store(tmp_path / "s"), ids, vectors, payloads)
    try:
        searcher = Searcher(store, encoder, candidates=CANDIDATES, hubness=0)
        query = QueryVectors(text=encoder.encode_texts(["red"])[0], image=vectors["image"][8])
        want = searcher.search_vectors(query, k=K, exclude={ids[8]})
        got = searcher.search("red", like=ids[8], k=K)
        assert _pairs(got) == _pairs(want)
        with pytest.raises(ConfigError, match="not both"):
            searcher.search(like=ids[8], image=Image.new("RGB", (8, 8)))
    finally:
        store.close()


def test_like_an_unknown_product_is_an_error(store) -> None:
    with pytest.raises(UnknownProductError, match="'nope'") as info:
        Searcher(store).search(like="nope")
    assert isinstance(info.value, ClipyError)


# -- facets ------------------------------------------------------------------------------


def _reference_facets(oracle: Oracle, field: str, flt: Filter | None, limit: int):
    counts = Counter(p[field] for p in oracle.payloads if matches(flt, p) and field in p)
    return sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))[:limit]


@pytest.mark.parametrize("flt", FILTERS, ids=["none", "any", "range+not"])
def test_facets_equal_reference_counts(store, oracle, flt) -> None:
    facets = Searcher(store).facets(filters=flt, limit=50)
    assert set(facets) == {"gender", "articleType", "baseColour", "season", "year"}
    for field, values in facets.items():
        want = _reference_facets(oracle, field, flt, 50)
        assert [(c.value, c.count) for c in values] == want, field
    assert facets["year"][0] == FacetCount(facets["year"][0].value, facets["year"][0].count)
    assert all(isinstance(c.value, int) for c in facets["year"])


def test_facets_limit_keeps_the_most_frequent_ties_by_value(store, oracle) -> None:
    flt = parse_filter(["articleType=Watches,Jeans"])
    facets = Searcher(store).facets(["baseColour", "year"], flt, limit=3)
    for field in ("baseColour", "year"):
        assert [(c.value, c.count) for c in facets[field]] == _reference_facets(
            oracle, field, flt, 3
        )


def test_facets_refuse_unknown_and_text_fields(store) -> None:
    searcher = Searcher(store)
    with pytest.raises(UnknownFieldError, match=r"'colour' is not indexed.*baseColour, gender"):
        searcher.facets(["colour"])
    with pytest.raises(FilterError, match="indexed as text"):
        searcher.facets(["productDisplayName"])


# -- unknown filter fields ---------------------------------------------------------------


def test_unknown_filter_fields_are_errors(store, products) -> None:
    searcher = Searcher(store)
    query = QueryVectors(text=products[1]["text"][0], image=products[1]["image"][0])
    for call in (
        lambda: searcher.search_vectors(query, filters=["colour=Red"]),
        lambda: searcher.facets(filters=["colour=Red"]),
        lambda: searcher.count(["colour=Red"]),
    ):
        with pytest.raises(UnknownFieldError, match="field 'colour' is not indexed"):
            call()
    assert searcher.count(["baseColour=Red"]) == store.count(parse_filter(["baseColour=Red"]))


# -- pages and diversity -----------------------------------------------------------------


@pytest.mark.parametrize("method", FUSION_METHODS)
@pytest.mark.parametrize("diversity", [None, 0.5])
def test_page_two_is_items_ten_to_twenty(store, products, method, diversity) -> None:
    _, vectors, _ = products
    searcher = Searcher(store, candidates=CANDIDATES)
    query = QueryVectors(text=vectors["text"][17], image=vectors["image"][40])
    cfg = FusionConfig(method, 0.5, 0.5)
    for flt in FILTERS:
        twenty = searcher.search_vectors(query, filters=flt, k=20, fusion=cfg, diversity=diversity)
        page = searcher.search_vectors(
            query, filters=flt, k=10, offset=10, fusion=cfg, diversity=diversity
        )
        assert _pairs(page) == _pairs(twenty[10:20])
        assert len(twenty) == 20
    with pytest.raises(ConfigError, match="offset"):
        searcher.search_vectors(query, offset=-1)
    with pytest.raises(ConfigError, match="diversity"):
        searcher.search_vectors(query, diversity=1.5)


def _brute_mmr(ranked, vectors, diversity, k):
    """MMR written out plainly: relevance min-max scaled, similarity a dot product."""
    scores = [s for _, s in ranked]
    lo, hi = min(scores), max(scores)
    rel = [(s - lo) / (hi - lo) if hi > lo else 1.0 for s in scores]
    chosen: list[int] = []
    while len(chosen) < min(k, len(ranked)):
        best, best_value = None, None
        for i in sorted(range(len(ranked)), key=lambda i: ranked[i][0]):
            if i in chosen:
                continue
            sim = max((float(vectors[i] @ vectors[j]) for j in chosen), default=0.0)
            value = (1 - diversity) * rel[i] - diversity * sim
            if best_value is None or value > best_value:
                best, best_value = i, value
        chosen.append(best)  # type: ignore[arg-type]
    return [ranked[i] for i in chosen]


@pytest.mark.parametrize("diversity", [0.0, 0.3, 0.7, 1.0])
def test_mmr_equals_brute_force(diversity) -> None:
    rng = np.random.default_rng(int(diversity * 10))
    ids = [f"p{i:02d}" for i in range(40)]
    text, image = rng.standard_normal((40, 8)), rng.standard_normal((40, 8))
    rows = similarity_vectors(
        dict(zip(ids, text, strict=True)), dict(zip(ids, image, strict=True)), ids
    )
    ranked = top_k({pid: float(s) for pid, s in zip(ids, rng.random(40), strict=True)}, 40)
    order = [ids.index(pid) for pid, _ in ranked]
    assert mmr(ranked, rows[order], diversity, 15) == _brute_mmr(ranked, rows[order], diversity, 15)
    if diversity == 0.0:
        assert mmr(ranked, rows[order], 0.0, 40) == ranked
    # The similarity rows' dot product is the mean of the text and image cosines.
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    want = (unit(text)[0] @ unit(text)[1] + unit(image)[0] @ unit(image)[1]) / 2
    assert rows[0] @ rows[1] == pytest.approx(want)


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_diversity_spreads_near_duplicates(backend, tmp_path) -> None:
    """Twelve near-identical shoes and varied products: the plain top 10 is all shoes, the
    diversified one is not."""
    ids, vectors, payloads = make_products(120, DIM, seed=5)
    rng = np.random.default_rng(1)
    shoe = vectors["text"][0]
    for i in range(12):
        for name in ("text", "image"):
            vectors[name][i] = shoe + 0.01 * rng.standard_normal(DIM)
        payloads[i]["productDisplayName"] = "Lotto Men White Sports Shoes"
    store = open_store(tmp_path / "s") if backend == "edge" else open_store(url=":memory:")
    try:
        searcher = Searcher(_fill(store, ids, vectors, payloads))
        query = QueryVectors(text=shoe, image=shoe)
        plain = searcher.search_vectors(query, k=10)
        spread = searcher.search_vectors(query, k=10, diversity=0.5)
        shoes = set(ids[:12])
        assert sum(h.product_id in shoes for h in plain) == 10
        assert sum(h.product_id in shoes for h in spread) <= 2
        assert spread[0].product_id == plain[0].product_id
    finally:
        store.close()


# -- products and their images -----------------------------------------------------------


def test_product_lookup(store, products) -> None:
    ids, _, payloads = products
    searcher = Searcher(store)
    assert searcher.product(ids[5]) == dict(payloads[5], product_id=ids[5])
    with pytest.raises(UnknownProductError, match="'999999'"):
        searcher.product("999999")
    with pytest.raises(UnknownProductError):
        searcher.product_image("999999")


def test_product_image_url_or_thumbnail(store, products) -> None:
    ids, _, _ = products
    searcher = Searcher(store)
    assert searcher.product_image(ids[7]) == ImageURL(f"https://img.example/{ids[7]}.jpg")
    with pytest.raises(StoreError, match=f"product {ids[9]} has no stored image"):
        searcher.product_image(ids[9])
    picture = Image.new("RGB", (600, 300), (200, 10, 10))
    store.put_thumbnails({ids[9]: make_thumbnail(picture, "h1")})
    image = searcher.product_image(ids[9])
    assert isinstance(image, ProductImage) and image.media_type == "image/jpeg"
    decoded = Image.open(io.BytesIO(image.data))
    assert decoded.format == "JPEG" and decoded.size == (MAX_SIDE, MAX_SIDE // 2)
    # Same content hash: the stored thumbnail stays; another hash replaces it.
    store.put_thumbnails({ids[9]: Thumbnail(b"other", "image/jpeg", "h1")})
    assert store.thumbnail(ids[9]) == Thumbnail(image.data, "image/jpeg", "h1")
    store.put_thumbnails({ids[9]: Thumbnail(b"other", "image/jpeg", "h2")})
    assert store.thumbnail(ids[9]) == Thumbnail(b"other", "image/jpeg", "h2")
    # The thumbnail never shows in payloads.
    assert "thumbnail" not in searcher.product(ids[9])
    assert all("thumbnail" not in p.payload for p in store.scroll())
    assert "thumbnail" not in store.retrieve([ids[9]])[0].payload


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_ingest_stores_thumbnails_or_keeps_the_url(backend, tmp_path) -> None:
    from ingest.pipeline import run_ingest
    from ingest.records import Product

    def product(i: int, url: str | None = None) -> Product:
        buffer = io.BytesIO()
        Image.new("RGB", (400, 520), (40 * i, 20, 200)).save(buffer, "JPEG")
        meta = {"gender": "Men", **({"image_url": url} if url else {})}
        return Product(str(i), f"shirt {i}", meta, image_bytes=buffer.getvalue())

    catalog = [product(i) for i in range(5)] + [product(5, "https://img.example/5.jpg")]
    store = open_store(tmp_path / "s") if backend == "edge" else open_store(url=":memory:")
    try:
        encoder = FakeEncoder(DIM)
        run_ingest(catalog, store, encoder, batch_size=4, progress=False)
        searcher = Searcher(store, encoder)
        image = searcher.product_image("3")
        assert isinstance(image, ProductImage)
        assert Image.open(io.BytesIO(image.data)).size == (197, MAX_SIDE)
        assert searcher.product_image("5") == ImageURL("https://img.example/5.jpg")
        assert store.thumbnail("5") is None
        stored = store.thumbnail("3")
        again = run_ingest(catalog, store, encoder, batch_size=4, progress=False)
        assert again.unchanged == 6 and store.thumbnail("3") == stored
        catalog[3] = product(9)
        catalog[3].product_id = "3"
        run_ingest(catalog, store, encoder, batch_size=4, progress=False)
        changed = store.thumbnail("3")
        assert changed is not None and stored is not None
        assert changed.data != stored.data and changed.content_hash != stored.content_hash
        assert "thumbnail" not in searcher.search_vectors(searcher.embed("shirt"), k=1)[0].payload
    finally:
        store.close()
