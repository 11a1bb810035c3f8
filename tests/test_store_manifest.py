"""The shard manifest (``clipy_qdrant.store.manifest``) on a real embedded store: written at a
clean close, kept by sessions that only read, removed by the first write, and checked before
the engine loads the shard, so that a damaged or truncated engine file is one clear error."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from corpus import GOOD, write_csv, write_good_images
from fake_encoder import FakeEncoder, register_fake

from clipy_qdrant.errors import StoreError
from clipy_qdrant.store import open_store, point_id
from clipy_qdrant.store.manifest import MANIFEST_FILE, checksummed
from ingest.pipeline import run_ingest
from ingest.readers import open_catalog

SEED = int(os.environ.get("CLIPY_CRASH_SEED", "1919"))


@pytest.fixture(scope="module", autouse=True)
def _fake() -> None:
    register_fake()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    write_good_images(tmp_path / "images")
    source = write_csv(tmp_path / "styles.csv", GOOD)
    path = tmp_path / "store"
    with open_store(path) as opened:  # type: ignore[attr-defined]
        run_ingest(open_catalog(source), opened, FakeEncoder(), progress=False)
        opened.build_index()
    return path


def _files(store: Path) -> dict[str, list[int]]:
    files: dict[str, list[int]] = json.loads((store / MANIFEST_FILE).read_text())["files"]
    return files


def test_a_clean_close_writes_the_manifest_and_reads_keep_it(store: Path) -> None:
    recorded = _files(store)
    assert any("id_tracker." in name for name in recorded)
    assert all(len(entry) == 2 for name, entry in recorded.items() if checksummed(Path(name)))
    before = (store / MANIFEST_FILE).stat().st_mtime_ns
    for _ in range(2):
        with open_store(store) as opened:  # type: ignore[attr-defined]
            assert opened.count() == len(GOOD)
    # Opening and reading change no listed file (the second open checked them all).
    assert (store / MANIFEST_FILE).stat().st_mtime_ns == before


def test_the_first_write_removes_the_manifest_and_the_close_writes_it_again(
    store: Path, tmp_path: Path
) -> None:
    opened = open_store(store)
    try:
        assert (store / MANIFEST_FILE).exists()
        opened.set_payload("gender", {str(GOOD[0]["id"]): "Unisex"})
        # A kill from here on leaves no manifest, so the next open checks nothing.
        assert not (store / MANIFEST_FILE).exists()
    finally:
        opened.close()
    assert (store / MANIFEST_FILE).exists()
    with open_store(store) as reopened:  # type: ignore[attr-defined]
        assert reopened.count() == len(GOOD)


class _RecordingShard:
    """The engine shard, recording the names of the methods called on it."""

    def __init__(self, shard: Any) -> None:
        self.shard = shard
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.shard, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def test_a_session_that_only_reads_closes_without_a_flush_and_a_write_is_flushed(
    store: Path,
) -> None:
    opened = open_store(store)
    assert opened.count() == len(GOOD)
    shard = opened._shard = _RecordingShard(opened._shard)  # type: ignore[attr-defined]
    opened.close()
    assert shard.calls == ["close"]

    opened = open_store(store)
    opened.set_payload("gender", {str(GOOD[0]["id"]): "Unisex"})
    shard = opened._shard = _RecordingShard(opened._shard)  # type: ignore[attr-defined]
    opened.close()
    assert shard.calls == ["flush", "close"]
    with open_store(store) as reopened:  # type: ignore[attr-defined]
        (point,) = reopened.retrieve([str(GOOD[0]["id"])])
        assert point.payload["gender"] == "Unisex"


def test_a_store_without_a_manifest_opens_and_gets_one(store: Path) -> None:
    (store / MANIFEST_FILE).unlink()
    with open_store(store) as opened:  # type: ignore[attr-defined]
        assert opened.count() == len(GOOD)
    assert (store / MANIFEST_FILE).exists()


def test_an_unreadable_manifest_checks_nothing(store: Path) -> None:
    (store / MANIFEST_FILE).write_bytes(random.Random(SEED).randbytes(64))
    with open_store(store) as opened:  # type: ignore[attr-defined]
        assert opened.count() == len(GOOD)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "delete"])
def test_a_damaged_id_tracker_is_one_clear_error(store: Path, damage: str) -> None:
    names = [name for name in _files(store) if name.endswith("id_tracker.mappings")]
    assert names
    target = store / "shard" / names[0]
    data = target.read_bytes()
    if damage == "garbage":
        middle = len(data) // 2
        garbage = random.Random(f"{SEED}-manifest").randbytes(64)
        target.write_bytes(data[:middle] + garbage + data[middle + 64 :])
    elif damage == "truncate":
        target.write_bytes(data[: len(data) // 3])
    else:
        target.unlink()
    with pytest.raises(StoreError) as caught:
        open_store(store)
    message = str(caught.value)
    assert f"store file {target} is damaged" in message
    assert "restore the store from a copy or re-ingest" in message
    assert "\n" not in message


def test_a_write_that_bypasses_the_manifest_raises_no_false_alarm(store: Path) -> None:
    """A process that writes the shard without keeping the manifest (a clipy without it, a
    direct engine call) changes the WAL: the manifest no longer applies, nothing is checked,
    and the next close records the shard as it is."""
    import qdrant_edge as qe

    recorded = (store / MANIFEST_FILE).read_bytes()
    opened = open_store(store)
    try:
        shard = opened._shard  # type: ignore[attr-defined]
        ids: list[int | str] = [point_id(str(GOOD[0]["id"]))]
        shard.update(qe.UpdateOperation.set_payload(ids, {"gender": "Unisex"}))
        shard.optimize()
    finally:
        opened.close()
    assert (store / MANIFEST_FILE).read_bytes() == recorded  # stale: the write went around it
    with open_store(store) as reopened:  # type: ignore[attr-defined]
        assert reopened.count() == len(GOOD)
    assert (store / MANIFEST_FILE).read_bytes() != recorded
    with open_store(store) as reopened:  # type: ignore[attr-defined]
        assert reopened.count() == len(GOOD)
