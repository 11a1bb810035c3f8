"""The VectorStore contract, run against every backend and checked against the FAISS oracle.

Backends: ``edge`` (qdrant-edge in a temp folder), ``client`` (qdrant-client ``:memory:``) and
``server`` (a real Qdrant; only with ``CLIPY_TEST_QDRANT_URL`` set).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import (
    ARTICLE_TYPES,
    COLOURS,
    GENDERS,
    SEASONS,
    Oracle,
    assert_same_topk,
    make_products,
)

from clipy_qdrant.config import get_settings
from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.errors import EncoderMismatchError, StoreError
from clipy_qdrant.filters import Filter, Match, Range, matches, parse_filter
from clipy_qdrant.store import (
    CONTENT_HASH_KEY,
    HUBNESS_KEY,
    IMAGE,
    PRODUCT_ID_KEY,
    TEXT,
    HubnessInfo,
    PointRecord,
)
from clipy_qdrant.store.client import ClientStore
from clipy_qdrant.store.edge import EdgeStore
from clipy_qdrant.store.qdrant import UPSERT_BATCH

DIM = 32
N = 1200
ENCODER = EncoderInfo("test-encoder", DIM)
INDEXED: dict[str, Any] = {
    "gender": "keyword",
    "articleType": "keyword",
    "baseColour": "keyword",
    "season": "keyword",
    "usage": "keyword",
    "year": "integer",
}
BACKENDS = ["edge", "client", pytest.param("server", marks=pytest.mark.server)]


def _server_url() -> str:
    url = get_settings().test_qdrant_url
    if not url:
        pytest.skip("set CLIPY_TEST_QDRANT_URL to run the server tier")
    return url


def open_backend(kind: str, tmp: Path) -> EdgeStore | ClientStore:
    """A fresh, empty store of ``kind``."""
    if kind == "edge":
        return EdgeStore(tmp / "store")
    if kind == "client":
        return ClientStore(":memory:")
    return ClientStore(_server_url(), collection=f"clipy_test_{uuid.uuid4().hex[:12]}")


def dispose(store: EdgeStore | ClientStore) -> None:
    if isinstance(store, ClientStore) and not store.local:
        store.delete_collection()
    store.close()


def records(ids, vectors, payloads, *, scale: float = 1.0, tag: str = "h") -> list[PointRecord]:
    return [
        PointRecord(
            product_id=pid,
            vectors={IMAGE: vectors[IMAGE][i] * scale, TEXT: vectors[TEXT][i] * scale},
            payload=payloads[i],
            content_hash=f"{tag}-{pid}",
        )
        for i, pid in enumerate(ids)
    ]


@pytest.fixture(scope="module")
def catalog() -> tuple[list[str], dict[str, np.ndarray], list[dict[str, Any]], Oracle]:
    ids, vectors, payloads = make_products(N, DIM, seed=7)
    return ids, vectors, payloads, Oracle(ids, vectors, payloads)


@pytest.fixture(scope="module", params=BACKENDS)
def loaded(request, tmp_path_factory, catalog) -> Iterator[EdgeStore | ClientStore]:
    """A read-only store per backend holding the module catalog (vectors scaled by 2.5,
    so the store's normalisation is exercised too)."""
    ids, vectors, payloads, _ = catalog
    store = open_backend(request.param, tmp_path_factory.mktemp(request.param))
    store.ensure_collection(ENCODER, INDEXED)
    store.upsert(records(ids, vectors, payloads, scale=2.5))
    yield store
    dispose(store)


@pytest.fixture(params=BACKENDS)
def empty(request, tmp_path) -> Iterator[EdgeStore | ClientStore]:
    store = open_backend(request.param, tmp_path)
    yield store
    dispose(store)


def queries(vectors: dict[str, np.ndarray], n: int, seed: int) -> list[np.ndarray]:
    """Queries near stored products (as real ones are), never exactly on them."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, vectors[TEXT].shape[0], n)
    return [(vectors[TEXT][r] + 0.4 * rng.standard_normal(DIM)).astype(np.float32) for r in rows]


FILTERS: dict[str, Filter | None] = {
    "none": None,
    "equality": parse_filter(["gender=Women"]),
    "any_of": parse_filter(["baseColour=Red,Blue,Navy Blue"]),
    "range": parse_filter(["year=2011..2014"]),
    "open_range": parse_filter(["year>2016"]),
    "negation": parse_filter(["articleType!=Tshirts,Shirts"]),
    "combined": parse_filter(
        ["gender=Men,Unisex", "year>=2012", "season!=Summer", "usage!=Sports"]
    ),
    "empty_result": parse_filter(["gender=Nobody"]),
}


@pytest.mark.parametrize("using", [IMAGE, TEXT])
@pytest.mark.parametrize("case", list(FILTERS))
def test_exact_search_equals_oracle(loaded, catalog, using, case) -> None:
    _, vectors, _, oracle = catalog
    flt = FILTERS[case]
    for q in queries(vectors, 4, seed=hash(case) % 1000):
        hits = loaded.search(using, q, 10, flt, exact=True)
        assert_same_topk([(h.product_id, h.score) for h in hits], oracle.search(using, q, 10, flt))
        assert all(matches(flt, h.payload) for h in hits)
    if case == "empty_result":
        assert hits == []
    else:
        assert len(hits) == 10


def test_hits_carry_payload_or_not(loaded, catalog) -> None:
    ids, vectors, payloads, _ = catalog
    q = vectors[IMAGE][3]
    with_payload = loaded.search(IMAGE, q, 3, exact=True)
    assert with_payload[0].product_id == ids[3]
    assert with_payload[0].payload == {
        **payloads[3],
        PRODUCT_ID_KEY: ids[3],
        CONTENT_HASH_KEY: f"h-{ids[3]}",
    }
    bare = loaded.search(IMAGE, q, 3, with_payload=False, exact=True)
    assert [h.product_id for h in bare] == [h.product_id for h in with_payload]
    assert all(h.payload is None for h in bare)
    keys = loaded.search(IMAGE, q, 3, with_payload=["gender", "nosuchkey"], exact=True)
    assert [(h.product_id, h.score) for h in keys] == [
        (h.product_id, h.score) for h in with_payload
    ]
    assert keys[0].payload == {PRODUCT_ID_KEY: ids[3], "gender": payloads[3]["gender"]}
    only_id = loaded.search(IMAGE, q, 3, with_payload=[], exact=True)
    assert only_id[0].payload == {PRODUCT_ID_KEY: ids[3]}
    (record,) = loaded.retrieve([ids[3]], with_payload=["gender"])
    assert record.payload == {PRODUCT_ID_KEY: ids[3], "gender": payloads[3]["gender"]}


def test_search_restricted_to_product_ids_scores_each_of_them(loaded, catalog) -> None:
    """A product-id filter with limit = their number returns every one of them with its exact
    score (how exact fusion scores candidates missing from a channel's list)."""
    ids, vectors, _, oracle = catalog
    some = [ids[i] for i in range(5, 400, 7)]
    q = queries(vectors, 1, seed=3)[0]
    want = oracle.scores(TEXT, q)
    flt = Filter(must=(Match(PRODUCT_ID_KEY, tuple(some)),))
    hits = loaded.search(TEXT, q, len(some), flt, with_payload=[], exact=True)
    assert sorted(h.product_id for h in hits) == sorted(some)
    for h in hits:
        assert h.score == pytest.approx(want[h.product_id], abs=1e-5)


_values = st.sampled_from
_conditions = st.one_of(
    st.lists(_values(GENDERS), min_size=1, max_size=3, unique=True).map(
        lambda v: Match("gender", tuple(v))
    ),
    st.lists(_values(ARTICLE_TYPES), min_size=1, max_size=3, unique=True).map(
        lambda v: Match("articleType", tuple(v))
    ),
    st.lists(_values((*COLOURS, "Purple")), min_size=1, max_size=4, unique=True).map(
        lambda v: Match("baseColour", tuple(v))
    ),
    _values(SEASONS).map(lambda v: Match("season", (v,))),
    st.lists(st.integers(2007, 2019), min_size=1, max_size=3, unique=True).map(
        lambda v: Match("year", tuple(v))
    ),
    st.builds(
        lambda lo, hi, lo_strict, hi_strict: Range(
            "year",
            gt=lo if lo_strict and lo is not None else None,
            gte=lo if not lo_strict and lo is not None else None,
            lt=hi if hi_strict and hi is not None else None,
            lte=hi if not hi_strict and hi is not None else None,
        ),
        st.none() | st.integers(2007, 2019).map(float),
        st.none() | st.integers(2007, 2019).map(float),
        st.booleans(),
        st.booleans(),
    ),
)
_filters = st.builds(
    lambda must, must_not: Filter(tuple(must), tuple(must_not)),
    st.lists(_conditions, max_size=3),
    st.lists(_conditions, max_size=2),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flt=_filters, row=st.integers(0, N - 1), using=st.sampled_from([IMAGE, TEXT]))
def test_random_filters_agree_with_reference(loaded, catalog, flt, row, using) -> None:
    """Every hit satisfies the filter, and no matching product that scores higher is missing."""
    _, vectors, _, oracle = catalog
    q = vectors[TEXT][row] * 0.5 + vectors[IMAGE][(row * 7) % N] * 0.5
    hits = loaded.search(using, q, 10, flt, exact=True)
    assert all(matches(flt, h.payload) for h in hits)
    assert_same_topk([(h.product_id, h.score) for h in hits], oracle.search(using, q, 10, flt))


@pytest.mark.parametrize("case", ["none", "any_of", "negation", "combined"])
def test_count_matches_reference(loaded, catalog, case) -> None:
    _, _, payloads, _ = catalog
    flt = FILTERS[case]
    assert loaded.count(flt) == sum(matches(flt, p) for p in payloads)


def test_scroll_yields_every_point_once(loaded, catalog) -> None:
    ids, _, _, _ = catalog
    seen = [p.product_id for p in loaded.scroll(batch_size=100)]
    assert sorted(seen) == sorted(ids)
    first = next(iter(loaded.scroll(with_vectors=True, batch_size=7)))
    assert set(first.vectors) == {IMAGE, TEXT}
    assert first.payload[PRODUCT_ID_KEY] == first.product_id


def test_scroll_selects_payload_keys_and_remembers_point_ids(loaded, catalog) -> None:
    """``with_payload`` picks the keys as search and retrieve do; every point scrolled is
    known afterwards by its point id, so a search's id-only hits need no payload read."""
    ids, _, payloads, _ = catalog
    some = {p.product_id: p.payload for p in loaded.scroll(with_payload=["baseColour"])}
    assert sorted(some) == sorted(ids)
    for pid, payload in some.items():
        assert set(payload) == {PRODUCT_ID_KEY, "baseColour"}
        assert payload["baseColour"] == payloads[ids.index(pid)]["baseColour"]
    loaded._product_of.clear()
    bare = list(loaded.scroll(with_payload=False, batch_size=9))
    assert sorted(p.product_id for p in bare) == sorted(ids)
    assert all(p.payload == {} for p in bare)
    assert sorted(loaded._product_of.values()) == sorted(ids)


def test_retrieve_returns_normalised_vectors(loaded, catalog) -> None:
    ids, vectors, payloads, _ = catalog
    rows = [0, 5, 17, N - 1]
    got = {p.product_id: p for p in loaded.retrieve([ids[r] for r in rows], with_vectors=True)}
    assert set(got) == {ids[r] for r in rows}
    for r in rows:
        point = got[ids[r]]
        assert point.payload["baseColour"] == payloads[r]["baseColour"]
        for name in (IMAGE, TEXT):
            vec = point.vectors[name]
            assert vec.dtype == np.float32 and vec.shape == (DIM,)
            assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
            # Stored 2.5 × the unit vector; the store keeps the normalised one.
            np.testing.assert_allclose(vec, vectors[name][r], atol=1e-5)
    assert loaded.retrieve(["no-such-product"]) == []
    bare = loaded.retrieve([ids[0]], with_payload=False)
    assert bare[0].product_id == ids[0] and bare[0].payload == {} and bare[0].vectors == {}


def test_indexed_fields_reported(loaded) -> None:
    fields = loaded.indexed_fields()
    for name, kind in INDEXED.items():
        assert fields.get(name) == kind


def test_reupsert_replaces_instead_of_duplicating(empty) -> None:
    ids, vectors, payloads = make_products(60, DIM, seed=3)
    empty.ensure_collection(ENCODER, INDEXED)
    empty.upsert(records(ids, vectors, payloads, tag="v1"))
    assert empty.count() == 60
    changed = [{**p, "baseColour": "Purple"} for p in payloads[:20]]
    empty.upsert(records(ids[:20], {k: v[:20] for k, v in vectors.items()}, changed, tag="v2"))
    assert empty.count() == 60
    assert empty.count(parse_filter(["baseColour=Purple"])) == 20
    stored = {p.product_id: p.payload for p in empty.retrieve(ids[:25])}
    assert all(stored[i]["baseColour"] == "Purple" for i in ids[:20])
    assert all(stored[i]["baseColour"] != "Purple" for i in ids[20:25])
    hashes = empty.content_hashes([*ids[18:22], "missing-id"])
    assert hashes == {
        ids[18]: f"v2-{ids[18]}",
        ids[19]: f"v2-{ids[19]}",
        ids[20]: f"v1-{ids[20]}",
        ids[21]: f"v1-{ids[21]}",
    }
    assert empty.content_hashes([]) == {}


def test_unfiltered_count_stays_exact_through_replacements_and_an_index_build(empty) -> None:
    """Replaced points, payload writes and merged segments never show in the count: the
    edge store counts exactly (the engine's live-point totals count a point twice while a
    shard reloaded after a kill holds it in two segments)."""
    ids, vectors, payloads = make_products(120, DIM, seed=5)
    empty.ensure_collection(ENCODER, INDEXED)
    for tag in ("v1", "v2", "v3"):
        empty.upsert(records(ids, vectors, payloads, tag=tag))
        assert empty.count() == 120 == len(list(empty.scroll(batch_size=50)))
    empty.set_payload("baseColour", {pid: "Teal" for pid in ids[:30]})
    assert empty.count() == 120
    empty.build_index()
    assert empty.count() == 120
    assert empty.count(parse_filter(["baseColour=Teal"])) == 30


def test_encoder_mismatch_is_refused(empty) -> None:
    assert empty.encoder_info() is None
    with pytest.raises(StoreError, match="no collection"):
        empty.check_encoder(ENCODER)
    empty.ensure_collection(ENCODER, INDEXED)
    empty.ensure_collection(ENCODER, INDEXED)  # same encoder again: fine
    assert empty.encoder_info() == ENCODER
    empty.check_encoder(ENCODER)
    other = EncoderInfo("another-encoder", DIM)
    with pytest.raises(EncoderMismatchError, match=r"test-encoder.*another-encoder.*--recreate"):
        empty.ensure_collection(other)
    with pytest.raises(EncoderMismatchError, match=r"dim 32.*dim 64"):
        empty.check_encoder(EncoderInfo("test-encoder", 64))


def test_bad_vectors_are_refused(empty) -> None:
    empty.ensure_collection(ENCODER)
    bad_dim = PointRecord("1", {IMAGE: np.ones(DIM + 1, np.float32)}, {})
    with pytest.raises(StoreError, match="dim 33"):
        empty.upsert([bad_dim])
    zero = PointRecord("2", {IMAGE: np.zeros(DIM, np.float32)}, {})
    with pytest.raises(StoreError, match="zero"):
        empty.upsert([zero])
    with pytest.raises(StoreError, match="dim"):
        empty.search(IMAGE, np.ones(DIM - 1), 5)
    assert empty.count() == 0


def test_delete_collection_allows_a_new_encoder(empty) -> None:
    ids, vectors, payloads = make_products(10, DIM, seed=4)
    empty.ensure_collection(ENCODER)
    empty.upsert(records(ids, vectors, payloads))
    empty.delete_collection()
    assert empty.encoder_info() is None
    assert empty.count() == 0
    wider = EncoderInfo("wider", 48)
    empty.ensure_collection(wider)
    assert empty.encoder_info() == wider
    assert empty.count() == 0


def test_edge_and_client_agree(tmp_path, catalog) -> None:
    ids, vectors, payloads, _ = catalog
    edge, client = EdgeStore(tmp_path / "parity"), ClientStore(":memory:")
    try:
        for store in (edge, client):
            store.ensure_collection(ENCODER, INDEXED)
            store.upsert(records(ids, vectors, payloads))
        for case in ("none", "combined", "any_of"):
            for using in (IMAGE, TEXT):
                for q in queries(vectors, 3, seed=11):
                    a = edge.search(using, q, 15, FILTERS[case], exact=True)
                    b = client.search(using, q, 15, FILTERS[case], exact=True)
                    assert_same_topk(
                        [(h.product_id, h.score) for h in a], [(h.product_id, h.score) for h in b]
                    )
                    payload_a = {h.product_id: h.payload for h in a}
                    assert all(payload_a.get(h.product_id, h.payload) == h.payload for h in b)
    finally:
        edge.close()
        client.close()


@pytest.mark.parametrize("batch_size", [1, 7, 25, 26, 1000])
def test_scroll_crosses_page_boundaries(empty, batch_size) -> None:
    """Pages of every size (one point, uneven, exact fit, one past) yield each point once."""
    ids, vectors, payloads = make_products(25, DIM, seed=12)
    empty.ensure_collection(ENCODER)
    empty.upsert(records(ids, vectors, payloads))
    seen = {p.product_id: p for p in empty.scroll(with_vectors=True, batch_size=batch_size)}
    assert len(seen) == 25 and sorted(seen) == sorted(ids)
    for i, pid in enumerate(ids):
        assert seen[pid].payload[CONTENT_HASH_KEY] == f"h-{pid}"
        np.testing.assert_allclose(seen[pid].vectors[TEXT], vectors[TEXT][i], atol=1e-5)


def test_content_hashes_of_unknown_ids(empty) -> None:
    ids, vectors, payloads = make_products(4, DIM, seed=13)
    empty.ensure_collection(ENCODER)
    assert empty.content_hashes(ids) == {}
    empty.upsert(records(ids[:2], vectors, payloads))
    assert empty.content_hashes(["nope", "nada"]) == {}
    assert empty.content_hashes([ids[1], "nope", ids[3]]) == {ids[1]: f"h-{ids[1]}"}


def test_writes_beyond_one_engine_batch(empty) -> None:
    """Upsert and set_payload split big writes into engine batches and lose nothing; a
    product that is not stored is refused before anything is written."""
    n = UPSERT_BATCH + 40
    ids, vectors, payloads = make_products(n, DIM, seed=14)
    empty.ensure_collection(ENCODER, {"tier": "keyword"})
    empty.upsert(records(ids, vectors, payloads))
    assert empty.count() == n
    tiers = {pid: ("gold" if i < UPSERT_BATCH + 10 else "silver") for i, pid in enumerate(ids)}
    with pytest.raises(StoreError, match=r"1 product\(s\) that are not stored.*not-stored"):
        empty.set_payload("tier", {**tiers, "not-stored": "gold"})
    assert empty.count(parse_filter(["tier=gold"])) == 0
    empty.set_payload("tier", tiers)
    assert empty.count() == n
    assert empty.count(parse_filter(["tier=gold"])) == UPSERT_BATCH + 10
    assert empty.count(parse_filter(["tier=silver"])) == 30
    empty.set_payload(HUBNESS_KEY, {ids[0]: np.float32(0.5)})
    (point,) = empty.retrieve([ids[0]])
    assert point.payload[HUBNESS_KEY] == 0.5 and point.payload["tier"] == "gold"
    assert point.payload["baseColour"] == payloads[0]["baseColour"]


def test_hubness_record(empty) -> None:
    info = HubnessInfo(top=10, bank=500, points=3, minimum=0.25)
    assert empty.hubness_info() is None
    with pytest.raises(StoreError, match="no collection"):
        empty.set_hubness_info(info)
    empty.ensure_collection(ENCODER)
    empty.set_hubness_info(info)
    assert empty.hubness_info() == info
    empty.set_hubness_info(None)
    assert empty.hubness_info() is None


def test_unknown_index_type_is_refused(empty) -> None:
    with pytest.raises(StoreError, match="unknown type 'string'"):
        empty.ensure_collection(ENCODER, {"gender": "string"})
    assert empty.encoder_info() is None


def test_empty_store_reads(empty) -> None:
    """Without a collection, count is 0 and reads name the missing collection."""
    assert empty.count() == 0
    for read in (
        lambda: empty.search(TEXT, np.ones(DIM), 3),
        lambda: empty.retrieve(["x"]),
        lambda: list(empty.scroll()),
        lambda: empty.upsert([]),
        empty.indexed_fields,
    ):
        with pytest.raises(StoreError, match="no collection yet"):
            read()


def test_closed_store_refuses_work(tmp_path) -> None:
    for store in (EdgeStore(tmp_path / "closed"), ClientStore(":memory:")):
        ids, vectors, payloads = make_products(3, DIM, seed=15)
        store.ensure_collection(ENCODER)
        store.upsert(records(ids, vectors, payloads))
        store.close()
        store.close()  # twice is fine
        for call in (
            lambda s=store, v=vectors: s.search(TEXT, v[TEXT][0], 3),
            lambda s=store: s.count(),
            lambda s=store, i=ids: s.retrieve(i),
            lambda s=store, i=ids: s.content_hashes(i),
            lambda s=store: list(s.scroll()),
            lambda s=store: s.ensure_collection(ENCODER),
            lambda s=store: s.delete_collection(),
        ):
            with pytest.raises(StoreError, match="closed"):
                call()


# -- edge only --------------------------------------------------------------------------


def test_edge_persists_across_reopen(tmp_path, catalog) -> None:
    ids, vectors, payloads, _ = catalog
    path = tmp_path / "persist"
    with EdgeStore(path) as store:
        store.ensure_collection(ENCODER, INDEXED)
        store.upsert(records(ids[:300], {k: v[:300] for k, v in vectors.items()}, payloads[:300]))
        store.build_index()
    assert (path / "clipy.json").exists() and (path / "shard").is_dir()
    with EdgeStore(path) as store:
        assert store.encoder_info() == ENCODER
        assert store.count() == 300
        # The graphs survive too: text, image and fused for each product.
        assert store.stats()["indexed_vectors"] == 900
        assert store.indexed_fields()["year"] == "integer"
        small = Oracle(ids[:300], {k: v[:300] for k, v in vectors.items()}, payloads[:300])
        q = queries(vectors, 1, seed=5)[0]
        hits = store.search(TEXT, q, 10, FILTERS["combined"], exact=True)
        assert_same_topk(
            [(h.product_id, h.score) for h in hits], small.search(TEXT, q, 10, FILTERS["combined"])
        )
        with pytest.raises(EncoderMismatchError):
            store.ensure_collection(EncoderInfo("test-encoder", DIM + 1))
        store.upsert(
            records(ids[300:310], {k: v[300:310] for k, v in vectors.items()}, payloads[300:310])
        )
        # The unfiltered count this open read before writing is not reused after a write.
        assert store.count() == 310
    with EdgeStore(path) as store:
        assert store.count() == 310
    with pytest.raises(StoreError, match="closed"):
        store.search(TEXT, q, 1)


_OPEN_IN_CHILD = textwrap.dedent(
    """
    import sys
    from clipy_qdrant.errors import StoreError
    from clipy_qdrant.store.edge import EdgeStore
    try:
        store = EdgeStore(sys.argv[1])
    except StoreError as exc:
        print("StoreError:", exc)
    else:
        print("opened", store.count())
        store.close()
    """
)


def _open_in_child(path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_IN_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_edge_second_process_gets_clear_error(tmp_path) -> None:
    """A second process opening a held store folder is told which process holds it."""
    ids, vectors, payloads = make_products(5, DIM, seed=9)
    path = tmp_path / "locked"
    store = EdgeStore(path)
    store.ensure_collection(ENCODER)
    store.upsert(records(ids, vectors, payloads))
    try:
        out = _open_in_child(path)
        assert out.startswith("StoreError:"), out
        assert str(path) in out and "another clipy process" in out
        assert f"pid {os.getpid()}" in out
        assert "`" not in out  # names no command
    finally:
        store.close()
    assert not (path / "clipy.pid").exists()
    assert _open_in_child(path) == "opened 5"


def test_edge_lock_error_without_pid_file(tmp_path) -> None:
    """The holder's pid is a hint only: without the pid file the error still explains itself."""
    path = tmp_path / "locked"
    with EdgeStore(path) as store:
        store.ensure_collection(ENCODER)
        (path / "clipy.pid").unlink()
        out = _open_in_child(path)
        assert out.startswith("StoreError:") and "another clipy process" in out, out
        assert "pid" not in out


def test_edge_second_open_in_same_process(tmp_path) -> None:
    path = tmp_path / "twice"
    with EdgeStore(path) as store:
        store.ensure_collection(ENCODER)
        with pytest.raises(StoreError, match="already open in this process"):
            EdgeStore(path)
        assert store.count() == 0  # the first handle still works


def test_edge_reopen_reads_meta_back(tmp_path) -> None:
    """Indexes added later and the hubness record survive a reopen; marking stale does too."""
    path = tmp_path / "meta"
    info = HubnessInfo(top=5, bank=100, points=3, minimum=0.125)
    with EdgeStore(path) as store:
        store.ensure_collection(ENCODER, {"gender": "keyword"})
        store.ensure_collection(ENCODER, {"year": "integer"})
        store.set_hubness_info(info)
    with EdgeStore(path) as store:
        assert store.encoder_info() == ENCODER
        assert store.hubness_info() == info
        fields = store.indexed_fields()
        assert fields["gender"] == "keyword" and fields["year"] == "integer"
        assert fields[PRODUCT_ID_KEY] == "keyword"
        store.set_hubness_info(None)
    with EdgeStore(path) as store:
        assert store.hubness_info() is None
        assert store.indexed_fields()["year"] == "integer"


def test_edge_folder_states(tmp_path) -> None:
    """Metadata without a shard is an empty store; a shard without metadata is refused."""
    half = tmp_path / "half"
    with EdgeStore(half) as store:
        store.ensure_collection(ENCODER)
    shutil.rmtree(half / "shard")
    with EdgeStore(half) as store:
        assert store.encoder_info() is None and store.count() == 0
        wider = EncoderInfo("wider", 48)
        store.ensure_collection(wider)
        assert store.encoder_info() == wider
    (half / "clipy.json").unlink()
    with EdgeStore(half) as store, pytest.raises(StoreError, match=r"no clipy\.json"):
        store.ensure_collection(ENCODER)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        EdgeStore(tmp_path / "file")
    (tmp_path / "bad" / "shard").mkdir(parents=True)
    (tmp_path / "bad" / "clipy.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"cannot read clipy\.json"):
        EdgeStore(tmp_path / "bad")


def test_edge_hnsw_recall_after_build_index(tmp_path) -> None:
    """After build_index searches walk the graph, and recall@10 vs the oracle stays high."""
    n, dim = 3000, 64
    ids, vectors, payloads = make_products(n, dim, seed=21)
    oracle = Oracle(ids, vectors, payloads)
    rng = np.random.default_rng(1)
    qs = [
        (vectors[TEXT][r] + 0.4 * rng.standard_normal(dim)).astype(np.float32)
        for r in rng.integers(0, n, 50)
    ]

    def recall(store: EdgeStore, flt: Filter | None) -> float:
        found = 0
        for q in qs:
            for using in (IMAGE, TEXT):
                want = {i for i, _ in oracle.search(using, q, 10, flt)}
                found += len({h.product_id for h in store.search(using, q, 10, flt)} & want)
        return found / (10 * 2 * len(qs))

    # A tiny full-scan threshold: at this size Qdrant would otherwise scan instead of using
    # the graph, and the recall check would prove nothing.
    with EdgeStore(tmp_path / "hnsw", full_scan_threshold_kb=1) as store:
        store.ensure_collection(EncoderInfo("test-encoder", dim), INDEXED)
        store.upsert(records(ids, vectors, payloads))
        assert store.stats()["indexed_vectors"] == 0
        assert recall(store, None) == 1.0  # before the build, search is exact
        store.build_index()
        assert store.stats()["indexed_vectors"] == 3 * n  # text, image, fused
        unfiltered, filtered = recall(store, None), recall(store, FILTERS["equality"])
        assert unfiltered >= 0.95, f"recall@10 {unfiltered:.3f}"
        assert filtered >= 0.90, f"filtered recall@10 {filtered:.3f}"
        for q in qs[:5]:
            exact = store.search(IMAGE, q, 10, FILTERS["equality"], exact=True)
            assert_same_topk(
                [(h.product_id, h.score) for h in exact],
                oracle.search(IMAGE, q, 10, FILTERS["equality"]),
            )
        # A beam of 4 must lose neighbours: proof the graph, not a scan, answered.
        store.hnsw_ef = 4
        assert recall(store, None) < 0.95


def test_odd_filter_values_follow_reference(empty) -> None:
    """Values Qdrant cannot match natively (floats, mixed types) still mean what `matches` says."""
    rng = np.random.default_rng(2)
    payloads = [
        {
            "rating": [2.5, 3.0, 4.5, 5.0][i % 4],
            "size": ["S", 40, "M", 42][i % 4],
            "year": 2010 + i % 5,
        }
        for i in range(40)
    ]
    points = [
        PointRecord(str(i), {TEXT: rng.standard_normal(DIM).astype(np.float32)}, p)
        for i, p in enumerate(payloads)
    ]
    empty.ensure_collection(ENCODER)
    empty.upsert(points)
    cases = [
        Filter((Match("rating", (4.5,)),)),
        Filter((Match("rating", (2.5, 5.0)),)),
        Filter((Match("size", ("S", 40)),)),
        Filter((Match("year", (2011.0, 2013)),)),
        Filter(must_not=(Match("size", ("M", 42, 40)),)),
        Filter((Range("rating", gt=2.5, lt=5.0),), (Match("year", (2012,)),)),
    ]
    for flt in cases:
        want = {str(i) for i, p in enumerate(payloads) if matches(flt, p)}
        assert want, flt
        assert empty.count(flt) == len(want), flt
        hits = empty.search(TEXT, rng.standard_normal(DIM), 40, flt, exact=True)
        assert {h.product_id for h in hits} == want, flt


def test_product_with_one_vector(empty) -> None:
    """A product without an image is stored with its text vector only, and never found by image."""
    ids, vectors, payloads = make_products(6, DIM, seed=8)
    empty.ensure_collection(ENCODER)
    empty.upsert(records(ids[:5], vectors, payloads))
    empty.upsert([PointRecord(ids[5], {TEXT: vectors[TEXT][5]}, payloads[5], "t-only")])
    assert empty.count() == 6
    assert ids[5] not in {
        h.product_id for h in empty.search(IMAGE, vectors[IMAGE][5], 10, exact=True)
    }
    assert empty.search(TEXT, vectors[TEXT][5], 1, exact=True)[0].product_id == ids[5]
    (stored,) = empty.retrieve([ids[5]], with_vectors=True)
    assert set(stored.vectors) == {TEXT}
