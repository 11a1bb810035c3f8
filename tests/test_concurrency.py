"""Concurrency (issue #19): a store another process holds is refused at once with a message
naming that process; a search during an ingest in the same process sees a consistent store;
N threads searching one ``Searcher`` get what a serial run gets."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fake_encoder import FakeEncoder, register_fake
from test_crash_resume import child_env, clipy, make_catalog
from typer.testing import CliRunner

from clipy_qdrant.search import Searcher
from clipy_qdrant.store import IMAGE, TEXT, open_store
from ingest.cli import app
from ingest.pipeline import run_ingest
from ingest.readers import open_catalog

HOLDER = """
import sys
from clipy_qdrant.store import open_store
store = open_store(sys.argv[1])
print("holding", flush=True)
sys.stdin.readline()
store.close()
"""


@pytest.fixture(scope="module", autouse=True)
def _fake() -> None:
    register_fake()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_catalog(tmp_path_factory.mktemp("conc") / "cat", 300, seed=5)


@pytest.fixture(scope="module")
def store(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("conc-store") / "store"
    with open_store(path) as opened:  # type: ignore[attr-defined]
        run_ingest(open_catalog(source), opened, FakeEncoder(), progress=False)
    return path


@pytest.mark.parametrize("command", ["ingest", "search", "info", "verify"])
def test_a_store_held_by_another_process_is_refused_at_once_naming_it(
    command: str, source: Path, store: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        args = {
            "ingest": ["ingest", str(source), "--encoder", "fake"],
            "search": ["search", "red shirt"],
            "info": ["info"],
            "verify": ["verify"],
        }[command]
        started = time.monotonic()
        result = subprocess.run(
            clipy(*args, "--store", str(store)),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=120,
        )
        waited = time.monotonic() - started
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"clipy: error: store {store} is held open by another clipy process")
    assert f"(pid {holder.pid})" in last
    assert waited < 60  # refused at once, not after waiting for the lock
    assert "Traceback" not in result.stderr


def test_search_during_an_ingest_sees_a_consistent_store(source: Path, tmp_path: Path) -> None:
    """One store object, an ingest on a thread, searches on this one: the count never goes
    down and every hit is a whole product (payload with its id, both vectors stored)."""
    store = open_store(tmp_path / "store")
    encoder = FakeEncoder()
    store.ensure_collection(encoder.info, {"gender": "keyword", "year": "integer"})
    searcher = Searcher(store, encoder)
    failures: list[BaseException] = []

    def ingest() -> None:
        try:
            run_ingest(open_catalog(source), store, encoder, batch_size=8, progress=False)
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=ingest)
    worker.start()
    counts = []
    searches = 0
    try:
        while worker.is_alive() or searches < 3:
            counts.append(store.count())
            hits = searcher.search("red shirt", k=5)
            searches += 1
            if hits:
                ids = [h.product_id for h in hits]
                assert all(h.payload.get("product_id") == h.product_id for h in hits)
                points = store.retrieve(ids, with_vectors=True)
                assert {p.product_id for p in points} == set(ids)
                assert all(IMAGE in p.vectors and TEXT in p.vectors for p in points)
    finally:
        worker.join()
        store.close()
    assert not failures, failures
    assert counts == sorted(counts), counts
    assert searches >= 3 and counts[-1] <= 300


def test_threads_searching_one_searcher_match_a_serial_run(store: Path) -> None:
    rng = random.Random(31)
    words = ["red", "blue", "shirt", "shoe", "item", "green", "black"]
    queries = [" ".join(rng.sample(words, 2)) for _ in range(40)]
    filters = [None, ["gender=Men"], ["year>=2010"]]
    jobs = [(q, filters[i % 3]) for i, q in enumerate(queries)]
    with open_store(store) as opened:  # type: ignore[attr-defined]
        searcher = Searcher(opened, FakeEncoder())

        def run(job: tuple[str, list[str] | None]) -> list[tuple[str, float]]:
            return [
                (h.product_id, round(h.score, 6))
                for h in searcher.search(job[0], filters=job[1], k=10)
            ]

        serial = [run(job) for job in jobs]
        with ThreadPoolExecutor(8) as pool:
            parallel = list(pool.map(run, jobs))
    assert parallel == serial


def test_cli_search_holds_nothing_after_it_exits(store: Path) -> None:
    """A finished command releases the store: the next one opens it at once."""
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["search", "red", "--store", str(store), "--json"])
        assert result.exit_code == 0, result.output
    assert not (store / "clipy.pid").exists()
