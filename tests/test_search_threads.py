"""The embedded engine's search pool (``search_threads``, ``CLIPY_SEARCH_THREADS``): a new
shard records it, and a shard recorded with another size is loaded with the asked one and
keeps its layout and its answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.errors import ConfigError
from clipy_qdrant.store import PointRecord, open_store
from clipy_qdrant.store.edge import DEFAULT_SEARCH_THREADS, SHARD_DIR, EdgeStore
from clipy_qdrant.store.options import CollectionOptions
from ingest.cli import app

DIM = 32


def _points(n: int) -> list[PointRecord]:
    rng = np.random.default_rng(3)
    return [
        PointRecord(
            f"p{i}",
            {"image": rng.normal(size=DIM), "text": rng.normal(size=DIM)},
            {"kind": ["a", "b"][i % 2]},
            content_hash=f"h{i}",
        )
        for i in range(n)
    ]


def _engine_config(store: Path) -> dict:
    return json.loads((store / SHARD_DIR / "edge_config.json").read_text())


def _answers(store: EdgeStore, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    return [
        [(h.product_id, round(h.score, 5)) for h in store.search("text", q, 5, with_payload=False)]
        for q in queries
    ]


def test_a_new_shard_records_the_pool_and_a_reopen_applies_another(tmp_path: Path) -> None:
    """Reloaded with another pool size, the shard keeps its recorded layout (vectors on disk,
    int8 quantization) and gives the same answers."""
    path = tmp_path / "s"
    options = CollectionOptions(on_disk=True, quantization="int8")
    queries = np.random.default_rng(9).normal(size=(6, DIM)).astype(np.float32)
    with EdgeStore(path, options=options, search_threads=2) as store:
        store.ensure_collection(EncoderInfo("fake", DIM))
        store.upsert(_points(200))
        store.build_index()
        before = _answers(store, queries)
    recorded = _engine_config(path)
    assert recorded["max_search_threads"] == 2
    with EdgeStore(path) as store:
        assert store.search_threads == DEFAULT_SEARCH_THREADS == 1
        assert store.collection_options() == options
        assert _answers(store, queries) == before
        assert store.count() == 200
    reloaded = _engine_config(path)
    assert reloaded["max_search_threads"] == 1
    assert reloaded["vectors"]["text"].get("on_disk") is True
    assert reloaded["quantization_config"] == recorded["quantization_config"]
    assert reloaded["sparse_vectors"] == recorded["sparse_vectors"]


def test_a_pool_below_one_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"search_threads must be >= 1 \(got 0\)"):
        EdgeStore(tmp_path / "s", search_threads=0)
    with pytest.raises(ConfigError, match=r"search_threads must be >= 1 \(got 0\)"):
        open_store(tmp_path / "s", search_threads=0)


def test_open_store_takes_the_setting_and_an_argument_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPY_SEARCH_THREADS", "3")
    with open_store(tmp_path / "a") as store:
        assert isinstance(store, EdgeStore) and store.search_threads == 3
    with open_store(tmp_path / "b", search_threads=2) as store:
        assert isinstance(store, EdgeStore) and store.search_threads == 2


@pytest.mark.parametrize("url", [None, ":memory:"])
def test_info_shows_the_pool_of_the_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str | None
) -> None:
    """``clipy info`` shows the embedded engine's pool (the setting's, or the default); a
    server sizes its own (``null``); a bad setting is a one-line error."""
    flags = ["info", "--json", "--store", str(tmp_path / "store")]
    flags += ["--qdrant-url", url] if url else []
    monkeypatch.delenv("CLIPY_SEARCH_THREADS", raising=False)
    result = CliRunner().invoke(app, flags)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["search_threads"] == (None if url else 1)
    monkeypatch.setenv("CLIPY_SEARCH_THREADS", "2")
    result = CliRunner().invoke(app, flags)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["search_threads"] == (None if url else 2)
    monkeypatch.setenv("CLIPY_SEARCH_THREADS", "0")
    result = CliRunner().invoke(app, flags)
    assert result.exit_code != 0
    assert "search_threads" in result.stderr and len(result.stderr.strip().splitlines()) == 1
