"""``clipy copy`` carries the lexical channel (issues #21, #23): the BM25 sparse vectors, the
BM25 constants and the catalog vocabulary travel with the dense vectors, so a copied store
answers a lexical query and corrects a misspelt word exactly as its source does.

The stores are written by a real ingest (generated catalog, real JPEG files, the fake
encoder), then copied embedded -> in-memory qdrant-client -> embedded, and as a snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fake_encoder import FakeEncoder, register_fake
from test_ingest_lexical import write_catalog
from typer.testing import CliRunner

from clipy_qdrant.errors import StoreError
from clipy_qdrant.lexical_store import LexicalIndex
from clipy_qdrant.store import VectorStore
from clipy_qdrant.store.base import PointRecord, StoredPoint
from clipy_qdrant.store.client import ClientStore
from clipy_qdrant.store.copy import copy_store, verify_copy
from clipy_qdrant.store.edge import EdgeStore
from clipy_qdrant.store.verify import verify_store
from ingest.cli import app
from ingest.pipeline import run_ingest
from ingest.readers import open_catalog

BRANDS = ["Nike", "Puma", "Adidas", "Roadster", "Fossil", "Titan", "Baggit", "Wildcraft"]
ITEMS = [
    "Running Shoes",
    "Sneakers",
    "Watch",
    "Slim Fit Jeans",
    "Sports Tshirt",
    "Backpack",
    "Handbag",
    "Sandals",
    "Shirts",
    "Shorts",
]
COLOURS = ["Red", "Blue", "Black", "White", "Green", "Brown", "Silver"]
#: A generated catalog: every brand, item and colour occurs several times.
NAMES = [
    f"{BRANDS[i % len(BRANDS)]} {('Men', 'Women', 'Unisex')[i % 3]} "
    f"{COLOURS[i % len(COLOURS)]} {ITEMS[i % len(ITEMS)]}"
    for i in range(60)
]
#: Queries with and without typos: each is corrected, then searched lexically.
QUERIES = [
    "blue sneakres",
    "red wacthes",
    "black runing shoes",
    "slim fti jeans",
    "backpak",
    "white shrts",
    "Nike sandals",
    "handbag",
]


@pytest.fixture
def source(tmp_path: Path) -> EdgeStore:
    store = EdgeStore(tmp_path / "src")
    styles = write_catalog(tmp_path / "catalog", NAMES)
    report = run_ingest(open_catalog(styles), store, FakeEncoder(), batch_size=16, progress=False)
    assert report.stored == len(NAMES)
    yield store
    store.close()


def _points(store: VectorStore) -> dict[str, StoredPoint]:
    return {p.product_id: p for p in store.scroll(with_vectors=True)}


def _assert_same_points(a: VectorStore, b: VectorStore) -> None:
    left, right = _points(a), _points(b)
    assert set(left) == set(right) and len(left) == len(NAMES)
    for pid, point in left.items():
        other = right[pid]
        assert other.payload == point.payload
        assert set(other.vectors) == set(point.vectors) == {"image", "text"}
        for name, vector in point.vectors.items():
            np.testing.assert_allclose(other.vectors[name], vector, atol=1e-6)
        assert point.lexical is not None and other.lexical is not None, pid
        assert other.lexical.indices == point.lexical.indices
        np.testing.assert_allclose(other.lexical.values, point.lexical.values, atol=1e-6)


def _lexical_answers(store: VectorStore) -> list[tuple[str, list[tuple[str, float]]]]:
    """``[(corrected query, [(product id, BM25 score), …]), …]`` for :data:`QUERIES`: every
    product sharing a word with the corrected query, by score then id (the generated names
    tie often, and the engines order ties differently)."""
    index = LexicalIndex.open(store)
    assert index is not None
    out = []
    for query in QUERIES:
        corrected = index.correct(query).corrected
        hits = store.search_lexical(index.query(corrected).vector, 2 * len(NAMES))
        ranked = sorted((-round(h.score, 4), h.product_id) for h in hits)
        out.append((corrected, [(pid, -score) for score, pid in ranked]))
    return out


def _assert_same_lexical_channel(a: VectorStore, b: VectorStore) -> None:
    assert b.has_lexical() and b.bm25_params() == a.bm25_params() is not None
    assert b.vocabulary() == a.vocabulary() is not None
    want = _lexical_answers(a)
    assert _lexical_answers(b) == want
    # The queries do exercise the channel: typos are corrected and every query finds hits.
    assert ("blue sneakers", want[0][1]) == want[0] and all(hits for _, hits in want)


def test_round_trip_through_memory_carries_the_lexical_channel(
    source: EdgeStore, tmp_path: Path
) -> None:
    memory = ClientStore(":memory:", collection="copy")
    there = copy_store(source, memory, batch=16, progress=False)
    assert there.ok, there.problems()
    _assert_same_points(source, memory)
    _assert_same_lexical_channel(source, memory)
    with EdgeStore(tmp_path / "back") as back:
        home = copy_store(memory, back, batch=25, progress=False)
        assert home.ok and not home.snapshot, home.problems()
        _assert_same_points(source, back)
        _assert_same_lexical_channel(source, back)
        assert back.hubness_info() == source.hubness_info() is not None
        assert {pid: back.thumbnail(pid) for pid in map(str, range(1, len(NAMES) + 1))} == {
            pid: source.thumbnail(pid) for pid in map(str, range(1, len(NAMES) + 1))
        }
        report = verify_store(back, FakeEncoder().info)
        assert report.ok, report.problems
        # Re-ingesting the catalog into the copy finds every product unchanged.
        again = run_ingest(
            open_catalog(tmp_path / "catalog" / "styles.csv"), back, FakeEncoder(), progress=False
        )
        assert (again.stored, again.unchanged) == (0, len(NAMES))
        _assert_same_points(source, back)
        _assert_same_lexical_channel(source, back)
    assert verify_store(memory, FakeEncoder().info).ok
    memory.close()


def test_snapshot_copy_carries_the_lexical_channel(source: EdgeStore, tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "dst") as target:
        report = copy_store(source, target, progress=False)
        assert report.ok and report.snapshot, report.problems()
    with EdgeStore(tmp_path / "dst") as target:  # what was recorded survives a reopen
        _assert_same_points(source, target)
        _assert_same_lexical_channel(source, target)
        assert verify_store(target, FakeEncoder().info).ok


def test_a_lost_lexical_vector_is_named_and_the_next_copy_restores_it(
    source: EdgeStore, tmp_path: Path
) -> None:
    with EdgeStore(tmp_path / "dst") as target:
        assert copy_store(source, target, progress=False, snapshot=False).ok
        point = _points(source)["7"]
        # Written again without its sparse vector: dense vectors and payload still match.
        same = PointRecord("7", point.vectors, point.payload, point.payload["content_hash"])
        target.upsert([same])
        assert _points(target)["7"].lexical is None
        assert verify_copy(source, target).mismatched == ["7"]
        problems = verify_store(target, FakeEncoder().info).problems
        assert problems == ["1 product(s) have product text but no lexical vector: 7"]
        repaired = copy_store(source, target, progress=False)
        assert repaired.ok and repaired.copied == 1, repaired.problems()
        _assert_same_points(source, target)


def test_verification_names_a_vocabulary_or_bm25_difference(
    source: EdgeStore, tmp_path: Path
) -> None:
    with EdgeStore(tmp_path / "dst") as target:
        assert copy_store(source, target, progress=False, snapshot=False).ok
        vocabulary = source.vocabulary()
        assert vocabulary is not None
        vocabulary.frequencies["zzzz"] = 1
        target.save_vocabulary(vocabulary)
        assert verify_copy(source, target).meta_problems == [
            "the catalog vocabulary (spelling correction, BM25 IDFs) differs from the source's"
        ]
        assert copy_store(source, target, progress=False).ok  # the copy rewrites it
        assert target.vocabulary() == source.vocabulary()


def _without_lexical(folder: Path) -> None:
    """Make the store in ``folder`` one whose metadata records no lexical vector (created
    before the channel existed)."""
    meta_file = folder / "clipy.json"
    meta = json.loads(meta_file.read_text())
    del meta["lexical"]
    meta_file.write_text(json.dumps(meta))
    (folder / "vocabulary.json").unlink(missing_ok=True)


def test_a_store_without_lexical_channel_copies_as_one(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "old") as old:
        run_ingest(
            open_catalog(write_catalog(tmp_path / "catalog", NAMES[:12])),
            old,
            FakeEncoder(),
            progress=False,
        )
        ids = [p.product_id for p in old.scroll()]
        # Written again without sparse vectors, as a store of that time holds its products.
        old.upsert(
            [
                PointRecord(p.product_id, p.vectors, p.payload, p.payload["content_hash"])
                for p in old.retrieve(ids, with_vectors=True)
            ]
        )
    _without_lexical(tmp_path / "old")
    with EdgeStore(tmp_path / "old") as old:
        assert not old.has_lexical()
        memory = ClientStore(":memory:")
        there = copy_store(old, memory, progress=False)
        assert there.ok, there.problems()
        assert not memory.has_lexical() and memory.vocabulary() is None
        assert LexicalIndex.open(memory) is None
        assert verify_store(memory, FakeEncoder().info).ok
        with EdgeStore(tmp_path / "back") as back:
            assert copy_store(memory, back, progress=False).ok
            assert not back.has_lexical() and back.bm25_params() is None
            assert verify_store(back, FakeEncoder().info).ok
        with EdgeStore(tmp_path / "snap") as snap:
            report = copy_store(old, snap, progress=False)
            assert report.ok and report.snapshot
            assert not snap.has_lexical()
        # A target collection with the lexical vector is not a copy of this store.
        with EdgeStore(tmp_path / "new") as new:
            new.ensure_collection(FakeEncoder().info)
            with pytest.raises(StoreError, match="lexical"):
                copy_store(old, new, progress=False)
        memory.close()


def test_cli_copy_then_verify_and_search_with_correction(source: EdgeStore, tmp_path: Path) -> None:
    register_fake()
    source.close()
    runner = CliRunner()
    copied = runner.invoke(
        app, ["copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--json", "--on-disk"]
    )
    assert copied.exit_code == 0, copied.output
    assert json.loads(copied.stdout)["ok"]
    verified = runner.invoke(app, ["verify", "--store", str(tmp_path / "dst")])
    assert verified.exit_code == 0, verified.output
    for folder in ("src", "dst"):
        result = runner.invoke(
            app,
            ["search", "blue sneakres", "--store", str(tmp_path / folder), "--json"],
        )
        assert result.exit_code == 0, result.output
        assert 'showing results for "blue sneakers"' in result.stderr
        hits = json.loads(result.stdout)
        assert hits[0]["correction"]["corrected"] == "blue sneakers"
        assert any(hit["lexical_score"] > 0 for hit in hits)
