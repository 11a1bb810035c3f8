"""benchmarks/load.py against a real uvicorn over a small store: the query kinds it is told to
send and no others, query texts from the server's catalog drawn without repeats until the
pool is spent, the server's CPU per query, and its refusals of bad arguments."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_encoder import FakeEncoder
from serve_store import build_store, running_server

from benchmarks import load
from clipy_qdrant.search import Searcher
from clipy_qdrant.serve import create_app


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = build_store(40, tmp_path_factory.mktemp("load") / "store")
    try:
        with running_server(create_app(Searcher(store, FakeEncoder()))) as base:
            yield base
    finally:
        store.close()


def _run(url: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "load.json"
    code = load.main(["--url", url, "--clients", "2", "--seconds", "1.5", "--out", str(out), *args])
    result = json.loads(out.read_text())
    assert code == 0 and result["kinds"]["all"]["errors"] == 0
    return result


def test_text_only_sends_catalog_texts_without_repeats(url: str, tmp_path: Path) -> None:
    result = _run(url, tmp_path, "--kinds", "text", "--server-pid", str(os.getpid()))
    assert set(result["kinds"]) == {"text", "all"}
    assert result["kinds"]["text"]["requests"] > 0
    sent = result["kinds"]["text"]["requests"]
    assert result["text_pool"] > 10  # names and attribute phrases of the stored products
    assert result["text_repeats"] == max(0, sent - result["text_pool"])
    assert result["server_cpu_ms_per_query"] > 0  # the server runs in this process


def test_a_small_pool_repeats_and_the_mix_sends_every_kind(url: str, tmp_path: Path) -> None:
    result = _run(url, tmp_path, "--texts", "3", "--warmup", "0.5")
    assert result["warmup_seconds"] == 0.5
    assert set(result["kinds"]) == {*load.KINDS, "all"}
    assert all(result["kinds"][kind]["requests"] > 0 for kind in load.KINDS)
    assert result["text_pool"] == 3 and result["text_repeats"] > 0
    assert result["server_cpu_ms_per_query"] is None  # no --server-pid


def test_the_pool_draws_every_text_once_before_any_repeats() -> None:
    pool = load.TextPool(["a", "b", "c"])
    first = [pool.draw() for _ in range(3)]
    assert sorted(first) == ["a", "b", "c"] and pool.repeats == 0
    assert [pool.draw() for _ in range(3)] == first and pool.repeats == 3


def test_product_texts_are_the_name_and_the_attribute_phrase() -> None:
    payload = {
        "productDisplayName": "Puma Men Black Shoes",
        "gender": "Men",
        "baseColour": "Black",
        "usage": "Sports",
        "articleType": "Sports Shoes",
    }
    assert load.product_texts(payload) == ["Puma Men Black Shoes", "Men Black Sports Sports Shoes"]
    assert load.product_texts({"gender": "Men"}) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--kinds", "text,bogus"],
        ["--kinds", ","],
        ["--clients", "0"],
        ["--seconds", "0"],
        ["--warmup", "-1"],
    ],
)
def test_bad_arguments_are_refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "load.py: error:" in err and args[0] in err
