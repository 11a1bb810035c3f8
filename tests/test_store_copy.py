"""Moving a store without re-embedding (clipy_qdrant.store.copy, ``clipy copy``): a round trip
embedded -> in-memory -> embedded equals the original, an interrupted copy resumes, the
verification names a corrupted or extra point, thumbnails travel, and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.errors import EncoderMismatchError, StoreError
from clipy_qdrant.spelling import Vocabulary
from clipy_qdrant.store import HUBNESS_KEY, HubnessInfo, PointRecord, StoredPoint
from clipy_qdrant.store.base import Thumbnail
from clipy_qdrant.store.client import ClientStore
from clipy_qdrant.store.copy import copy_store, verify_copy
from clipy_qdrant.store.edge import EdgeStore
from clipy_qdrant.store.options import CollectionOptions
from ingest.cli import app

ENC = EncoderInfo("fake", 24)
N = 130
FIELDS = {"kind": "keyword", "rank": "integer"}
HUB = HubnessInfo(top=5, bank=100, points=N, minimum=0.125)
#: Products with a thumbnail in the source (the others have none).
THUMBS = {
    f"p{i}": Thumbnail(bytes([0xFF, 0xD8, i, 7]) * 9, "image/jpeg", f"hash-{i}") for i in (1, 5, 99)
}


def _points(n: int = N, seed: int = 3) -> list[PointRecord]:
    rng = np.random.default_rng(seed)
    return [
        PointRecord(
            f"p{i}",
            {"image": rng.normal(size=ENC.dim), "text": rng.normal(size=ENC.dim)},
            {
                "kind": ["shoe", "bag", "hat"][i % 3],
                "rank": i,
                "price": 9.5 + i,
                "tags": ["a", f"t{i % 4}"],
                "image_url": f"https://img.example/{i}.jpg",
            },
            content_hash=f"hash-{i}",
        )
        for i in range(n)
    ]


def _fill(store: EdgeStore, options: CollectionOptions | None = None) -> EdgeStore:
    store.ensure_collection(ENC, FIELDS)  # type: ignore[arg-type]
    store.upsert(_points())
    store.set_payload(HUBNESS_KEY, {f"p{i}": 0.1 + i / 1000 for i in range(N)})
    store.set_hubness_info(HUB)
    return store


def _snapshot(store: EdgeStore | ClientStore) -> dict[str, StoredPoint]:
    return {p.product_id: p for p in store.scroll(with_vectors=True)}


def _assert_same(a: dict[str, StoredPoint], b: dict[str, StoredPoint]) -> None:
    assert set(a) == set(b)
    for pid, point in a.items():
        other = b[pid]
        assert other.payload == point.payload
        for name in ("image", "text"):
            np.testing.assert_allclose(other.vectors[name], point.vectors[name], atol=1e-6)


@pytest.fixture
def source(tmp_path: Path) -> EdgeStore:
    options = CollectionOptions(quantization="int8", hnsw_m=8)
    store = _fill(EdgeStore(tmp_path / "src", options=options))
    store.put_thumbnails(THUMBS)
    yield store
    store.close()


def test_round_trip_through_memory_equals_the_original(source: EdgeStore, tmp_path: Path) -> None:
    original = _snapshot(source)
    memory = ClientStore(":memory:", collection="copy")
    first = copy_store(source, memory, batch=32, progress=False)
    assert first.ok, first.problems()
    assert (first.copied, first.skipped, first.batches, first.thumbnails) == (N, 0, 5, 3)
    back = EdgeStore(tmp_path / "back")
    second = copy_store(memory, back, batch=50, progress=False)
    assert second.ok, second.problems()
    assert back.stats()["indexed_vectors"] == 2 * N  # the copy built the target's HNSW graph
    _assert_same(original, _snapshot(back))
    # Thumbnails travel too: a sqlite file beside the store -> the payload -> the sqlite file.
    assert {pid: back.thumbnail(pid) for pid in THUMBS} == THUMBS
    assert back.thumbnail("p2") is None
    # The metadata travels: encoder, payload indexes, hubness record, layout.
    assert back.encoder_info() == ENC
    assert {k: v for k, v in back.indexed_fields().items() if k in FIELDS} == FIELDS
    assert back.hubness_info() == HUB
    assert back.collection_options() == source.collection_options()
    # The copy searches like the original.
    query = original["p17"].vectors["image"]
    assert [h.product_id for h in back.search("image", query, 5)] == [
        h.product_id for h in source.search("image", query, 5)
    ]
    back.close()


def test_embedded_to_a_new_folder_moves_the_shard_as_a_snapshot(
    source: EdgeStore, tmp_path: Path
) -> None:
    source.build_index()
    with EdgeStore(tmp_path / "dst") as target:
        report = copy_store(source, target, progress=False)
        assert report.ok and report.snapshot, report.problems()
        # The point pass finds every product already there and copies the thumbnails.
        assert (report.copied, report.skipped, report.thumbnails) == (0, N, 3)
        assert target.stats()["indexed_vectors"] == 2 * N
        assert target.hubness_info() == HUB
        assert target.collection_options() == source.collection_options()
    assert not list(tmp_path.glob(".clipy-copy-*"))  # the archive is removed
    with EdgeStore(tmp_path / "dst") as target:  # reopens from the restored folder
        _assert_same(_snapshot(source), _snapshot(target))
    # Another layout, or snapshot=False, takes the point path.
    with EdgeStore(tmp_path / "relaid") as target:
        relaid = copy_store(source, target, progress=False, options=CollectionOptions(on_disk=True))
        assert relaid.ok and not relaid.snapshot and relaid.copied == N
    with EdgeStore(tmp_path / "points") as target:
        points = copy_store(source, target, progress=False, snapshot=False)
        assert points.ok and not points.snapshot and points.copied == N


def test_a_second_copy_writes_nothing(source: EdgeStore, tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "dst") as target:
        report = copy_store(source, target, progress=False)
        assert report.ok and report.thumbnails == 3
        again = copy_store(source, target, progress=False)
    assert (again.copied, again.skipped, again.thumbnails) == (0, N, 0)
    assert again.ok


def test_interrupted_copy_resumes_where_it_stopped(source: EdgeStore, tmp_path: Path) -> None:
    seen: list[int] = []
    with EdgeStore(tmp_path / "dst") as target:
        partial = copy_store(
            source, target, batch=20, progress=False, max_batches=3, on_batch=seen.append
        )
        assert seen == [20, 40, 60]
        assert not partial.complete and not partial.verified and not partial.ok
        assert partial.target_points == 60
        assert target.hubness_info() is None  # the record follows only a complete copy
    with EdgeStore(tmp_path / "dst") as target:
        rest = copy_store(source, target, batch=20, progress=False)
        assert rest.ok, rest.problems()
        assert (rest.skipped, rest.copied) == (60, N - 60)
        _assert_same(_snapshot(source), _snapshot(target))


def test_verification_names_a_corrupted_point_and_the_next_copy_repairs_it(
    source: EdgeStore, tmp_path: Path
) -> None:
    with EdgeStore(tmp_path / "dst") as target:
        assert copy_store(source, target, progress=False).ok
        bad = _points()[42]
        vectors = dict(bad.vectors)
        vectors["text"] = np.asarray(vectors["text"]) + 0.01  # a slightly different vector
        target.upsert([PointRecord("p42", vectors, bad.payload, bad.content_hash)])
        target.set_payload("price", {"p7": 1.0})
        target.put_thumbnails({"p5": Thumbnail(b"other", "image/jpeg", "hash-other")})
        check = verify_copy(source, target, batch=64)
        assert check.mismatched == ["p42", "p5", "p7"] and not check.ok
        assert "3 product(s) differ or are missing: p42, p5, p7" in check.problems()
        repaired = copy_store(source, target, progress=False)
        assert repaired.ok and (repaired.copied, repaired.thumbnails) == (2, 1)
        assert target.thumbnail("p5") == THUMBS["p5"]


def test_extra_points_and_lost_hubness_record_fail_the_verification(
    source: EdgeStore, tmp_path: Path
) -> None:
    with EdgeStore(tmp_path / "dst") as target:
        target.ensure_collection(ENC)
        target.upsert([PointRecord("stray", _points(1)[0].vectors, {}, "x")])
        report = copy_store(source, target, progress=False)
        assert not report.ok
        assert report.target_points == N + 1
        assert f"{N} points in the source, {N + 1} in the target" in report.problems()


def test_copy_refuses_an_empty_source_and_another_encoder(tmp_path: Path) -> None:
    empty = EdgeStore(tmp_path / "empty")
    with pytest.raises(StoreError, match="has no collection"):
        copy_store(empty, ClientStore(":memory:"), progress=False)
    empty.close()
    with EdgeStore(tmp_path / "src") as src, EdgeStore(tmp_path / "other") as other:
        _fill(src)
        other.ensure_collection(EncoderInfo("another", ENC.dim))
        with pytest.raises(EncoderMismatchError):
            copy_store(src, other, progress=False)


def test_explicit_layout_must_match_an_existing_target(source: EdgeStore, tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "dst") as target:
        target.ensure_collection(ENC)
        with pytest.raises(StoreError, match=r"quantization 'none', not 'int8'"):
            copy_store(source, target, options=CollectionOptions(quantization="int8"))


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def _file_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_replicate_makes_a_copy_that_another_open_reads_while_the_source_stays_open(
    source: EdgeStore, tmp_path: Path
) -> None:
    source.build_index()
    vocabulary = Vocabulary.from_texts(["red shoe", "blue shoe"])
    source.save_vocabulary(vocabulary)
    original = _snapshot(source)
    replica = source.replicate(tmp_path / "workers" / "worker-0")
    assert not (replica / "clipy.pid").exists()  # the lock holder's pid stays behind
    # The engine's preallocated files stay sparse: the copy takes the source's disk space,
    # not its files' sizes.
    used = {p: _disk_bytes(p) for p in (tmp_path / "src", replica)}
    assert used[replica] <= used[tmp_path / "src"] < _file_bytes(replica) / 2
    with EdgeStore(replica) as copy:
        _assert_same(original, _snapshot(copy))
        assert copy.stats()["indexed_vectors"] == 2 * N  # the HNSW graph is copied, not rebuilt
        assert {pid: copy.thumbnail(pid) for pid in THUMBS} == THUMBS
        assert copy.hubness_info() == HUB and copy.encoder_info() == ENC
        assert copy.collection_options() == source.collection_options()
        assert copy.vocabulary() == vocabulary
        query = original["p17"].vectors["text"]
        assert [h.product_id for h in copy.search("text", query, 5)] == [
            h.product_id for h in source.search("text", query, 5)
        ]
    # The source stays open and usable; a copy into a folder that exists is refused.
    assert source.count() == N
    with pytest.raises(StoreError, match="already exists"):
        source.replicate(replica)
    # A copy that fails (here: its parent is a file) leaves nothing and says why.
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=r"cannot copy store .*file/r: Not a directory"):
        source.replicate(tmp_path / "file" / "r")
    assert (tmp_path / "file").read_text() == "x"


def test_server_only_layout_of_the_source_is_dropped_for_an_embedded_target(
    tmp_path: Path,
) -> None:
    memory = ClientStore(":memory:", options=CollectionOptions(shards=4, replicas=2))
    memory.ensure_collection(ENC)
    memory.upsert(_points(10))
    with EdgeStore(tmp_path / "dst") as target:
        assert copy_store(memory, target, progress=False).ok
        assert target.collection_options() == CollectionOptions()


# -- the CLI -------------------------------------------------------------------------------------


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_copies_folder_to_folder_and_reports(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "src") as src:
        _fill(src)
    code, out, err = _run(
        "copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--json", "--on-disk", "--batch", "40"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["copied"] == N and report["batches"] == 4
    assert "verified" in err.splitlines()[-1]
    with EdgeStore(tmp_path / "dst") as dst:
        assert dst.count() == N and dst.collection_options() == CollectionOptions(on_disk=True)


def test_cli_moves_a_folder_to_a_new_folder_as_a_snapshot(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "src") as src:
        _fill(src)
    code, out, err = _run("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["snapshot"] and report["skipped"] == N
    assert "moved the shard as a snapshot" in err


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    code, _, err = _run("copy", str(tmp_path / "nowhere"), str(tmp_path / "dst"))
    assert code == 1 and err.strip() == (
        f"clipy: error: source store {tmp_path / 'nowhere'} does not exist; "
        "name a store folder or a URL"
    )
    code, _, err = _run("copy", str(tmp_path / "a"), ":memory:")
    assert code == 2 and "':memory:' lives only inside one process" in err
    with EdgeStore(tmp_path / "src") as src:
        _fill(src)
    code, _, err = _run("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--shards", "3")
    assert code == 1 and err.strip().splitlines()[-1].startswith(
        "clipy: error: --shards applies to a Qdrant server only"
    )


def test_cli_exits_non_zero_naming_the_mismatch(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "src") as src:
        _fill(src)
    with EdgeStore(tmp_path / "dst") as dst:
        dst.ensure_collection(ENC)
        dst.upsert([PointRecord("stray", _points(1)[0].vectors, {}, "x")])
    code, _, err = _run("copy", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"clipy: error: the copy in {tmp_path / 'dst'} does not match {tmp_path / 'src'}: "
        f"{N} points in the source, {N + 1} in the target"
    )


# -- server tier -------------------------------------------------------------------------------


@pytest.mark.server
def test_copy_to_a_server_with_a_layout_and_back(source: EdgeStore, tmp_path: Path) -> None:
    import os
    import uuid

    url = os.environ["CLIPY_TEST_QDRANT_URL"]
    name = f"clipy_test_copy_{uuid.uuid4().hex[:10]}"
    layout = CollectionOptions(shards=2, quantization="int8", on_disk=True)
    server = ClientStore(url, collection=name)
    try:
        there = copy_store(source, server, options=layout, progress=False)
        assert there.ok, there.problems()
        assert server.collection_options() == layout
        assert server._client.get_collection(name).config.params.shard_number == 2
        with EdgeStore(tmp_path / "back") as back:
            assert copy_store(server, back, progress=False).ok
            _assert_same(_snapshot(source), _snapshot(back))
            assert {pid: back.thumbnail(pid) for pid in THUMBS} == THUMBS
            # The server-only part of the layout stays behind; the rest comes along.
            assert back.collection_options() == layout.model_copy(update={"shards": None})
    finally:
        server.delete_collection()
        server.close()
