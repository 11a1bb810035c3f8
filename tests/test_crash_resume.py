"""Crash safety (issue #19): SIGKILL an ingest at 20 seeded random points, in every phase
(opening, loading, the hubness pass, the HNSW build), resume it, and compare the store with
a clean ingest's: same ids, vectors within 1e-6, same payloads, nothing twice, index built.
Damaged store files (clipy.json, WAL, a segment file) give a clear error or recover, never a
silent wrong answer.

Replay a failure with ``CLIPY_CRASH_SEED=<seed printed> pytest tests/test_crash_resume.py -s``;
every kill point is printed as ``kill <n>: <phase> <where>``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from corpus import image_bytes, write_csv

from clipy_qdrant.store import open_store
from clipy_qdrant.store.verify import verify_store

TESTS = Path(__file__).parent
REPO = TESTS.parent
SEED = int(os.environ.get("CLIPY_CRASH_SEED", "1919"))
PRODUCTS = 600
KILLS = 20
#: Phases and how many of the kill points fall in each.
PHASES = {"open": 2, "load": 8, "hubness": 4, "index": 4, "end": 2}


def clipy(*args: str) -> list[str]:
    return [sys.executable, str(TESTS / "fake_cli.py"), *args]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


@dataclass
class Catalog:
    source: Path
    clean: Path
    #: Seconds from start: first progress line, hubness bar start, hubness bar end, exit.
    timings: dict[str, float]


def make_catalog(root: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        rgb = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        (root / "images" / f"p{i}.jpg").write_bytes(image_bytes(rgb, size=(8, 8)))
        rows.append(
            {
                "id": f"p{i}",
                "productDisplayName": f"item {i} {rng.choice(['red', 'blue', 'shirt', 'shoe'])}",
                "gender": rng.choice(["Men", "Women"]),
                "year": 2000 + i % 20,
            }
        )
    return write_csv(root / "styles.csv", rows)


def ingest_args(source: Path, store: Path, report: Path) -> list[str]:
    return clipy(
        "ingest", str(source), "--store", str(store), "--encoder", "fake", "--report", str(report)
    )


def timed_run(args: list[str]) -> dict[str, float]:
    """Run to the end, noting when each phase shows on stderr."""
    started = time.monotonic()
    proc = subprocess.Popen(
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=child_env()
    )
    assert proc.stderr is not None
    seen: dict[str, float] = {}
    buffer = b""
    while chunk := proc.stderr.read1(4096):  # type: ignore[attr-defined]
        buffer += chunk
        now = time.monotonic() - started
        if b"product/s" in buffer and "load" not in seen:
            seen["load"] = now
        if b"hubness:" in buffer and "hubness" not in seen:
            seen["hubness"] = now
        if re.search(rb"hubness: 100%[^\n]*\n", buffer) and "index" not in seen:
            seen["index"] = now
    assert proc.wait() == 0, buffer[-2000:].decode(errors="replace")
    seen["end"] = time.monotonic() - started
    return seen


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    root = tmp_path_factory.mktemp("crash")
    source = make_catalog(root / "cat", PRODUCTS, SEED)
    clean = root / "clean"
    timings = timed_run(ingest_args(source, clean, root / "clean.json"))
    assert {"load", "hubness", "index"} <= set(timings), timings
    print(f"\nclean ingest of {PRODUCTS} products: phases at {timings} s")
    return Catalog(source, clean, timings)


def kill_points(timings: dict[str, float], seed: int) -> list[tuple[str, float]]:
    """``(phase, value)``: for ``load`` the number of products seen on the progress bar, for
    the others a delay in seconds after the phase's first line (``open``: after the start)."""
    rng = random.Random(seed)
    points: list[tuple[str, float]] = []
    for phase, count in PHASES.items():
        for _ in range(count):
            if phase == "open":
                points.append((phase, rng.uniform(0.5, timings["load"])))
            elif phase == "load":
                points.append((phase, rng.randrange(1, PRODUCTS)))
            elif phase == "hubness":
                points.append((phase, rng.uniform(0.0, timings["index"] - timings["hubness"])))
            elif phase == "index":
                points.append((phase, rng.uniform(0.0, 0.9 * (timings["end"] - timings["index"]))))
            else:  # the last moments: the report and the store being closed
                points.append((phase, rng.uniform(0.85, 1.0) * (timings["end"] - timings["index"])))
    assert len(points) == KILLS
    rng.shuffle(points)
    return points


def run_and_kill(args: list[str], phase: str, value: float) -> str:
    """Start an ingest and SIGKILL it at the kill point; returns what happened."""
    started = time.monotonic()
    proc = subprocess.Popen(
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=child_env()
    )
    assert proc.stderr is not None
    buffer = b""
    trigger = {
        "hubness": rb"hubness:",
        "index": rb"hubness: 100%[^\n]*\n",
        "end": rb"hubness: 100%[^\n]*\n",
    }
    deadline: float | None = started + value if phase == "open" else None
    os.set_blocking(proc.stderr.fileno(), False)
    while proc.poll() is None:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return f"killed at {now - started:.2f} s"
        chunk = proc.stderr.read(65536) or b""
        buffer = (buffer + chunk)[-65536:]
        if phase == "load":
            counts = re.findall(rb"(\d+)/\d+ \[", buffer)
            if counts and int(counts[-1]) >= value:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return f"killed at {int(counts[-1])} products on the bar"
        elif deadline is None and phase in trigger and re.search(trigger[phase], buffer):
            deadline = time.monotonic() + value
        time.sleep(0.005)
    return f"finished before the kill point (exit {proc.returncode})"


def snapshot(path: Path) -> dict[str, Any]:
    with open_store(path) as store:  # type: ignore[attr-defined]
        points = list(store.scroll(with_vectors=True))
        report = verify_store(store)
    ids = [p.product_id for p in points]
    assert len(ids) == len(set(ids)), "a product is stored twice"
    assert report.ok, report.problems
    return {p.product_id: p for p in points}


def assert_same_store(resumed: dict[str, Any], clean: dict[str, Any]) -> None:
    assert resumed.keys() == clean.keys()
    for product_id, point in clean.items():
        other = resumed[product_id]
        for name, vector in point.vectors.items():
            np.testing.assert_allclose(other.vectors[name], vector, atol=1e-6, err_msg=product_id)
        mine = {k: v for k, v in other.payload.items() if k != "hubness"}
        theirs = {k: v for k, v in point.payload.items() if k != "hubness"}
        assert mine == theirs, product_id
        assert other.payload["hubness"] == pytest.approx(point.payload["hubness"], abs=1e-6)


def test_sigkill_at_20_random_points_then_resume_equals_a_clean_ingest(
    catalog: Catalog, tmp_path: Path
) -> None:
    print(f"\ncrash seed {SEED} (replay: CLIPY_CRASH_SEED={SEED})")
    clean = snapshot(catalog.clean)
    points = kill_points(catalog.timings, SEED)
    reached: dict[str, int] = {}
    for n, (phase, value) in enumerate(points, 1):
        store = tmp_path / f"store-{n}"
        args = ingest_args(catalog.source, store, tmp_path / f"r{n}.json")
        outcome = run_and_kill(args, phase, value)
        print(f"kill {n}: {phase} {value:.3f} -> {outcome}")
        if outcome.startswith("killed"):
            reached[phase] = reached.get(phase, 0) + 1
        if store.exists():
            with open_store(store) as opened:  # type: ignore[attr-defined]
                stored_after_kill = opened.count()
        else:
            stored_after_kill = 0
        resume = subprocess.run(args, capture_output=True, env=child_env(), timeout=300)
        assert resume.returncode == 0, (n, phase, value, resume.stderr[-2000:])
        resumed = snapshot(store)
        assert len(resumed) >= stored_after_kill  # nothing stored before the kill is lost
        assert_same_store(resumed, clean)
        shutil.rmtree(store)
    print(f"kills per phase: {reached}")
    # Every phase was really hit (a phase missed by all its points would test nothing).
    assert {"open", "load", "hubness", "index"} <= set(reached), reached


# -- damaged store files --------------------------------------------------------------------


@pytest.fixture
def damaged(catalog: Catalog, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(catalog.clean, copy)
    return copy


def clipy_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        clipy(*args), capture_output=True, text=True, env=child_env(), timeout=300
    )


def assert_clear_error_or_sound(store: Path, catalog: Catalog) -> str:
    """``clipy verify`` on a damaged store: a one-line error, or a store whose every product
    is intact (compared with the clean one). Returns which."""
    result = clipy_run("verify", "--store", str(store))
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("clipy: error:"), result.stderr
        assert "Traceback" not in result.stderr and "panicked" not in result.stderr, result.stderr
        return f"error: {last}"
    assert_same_store(snapshot(store), snapshot(catalog.clean))
    return "recovered"


@pytest.mark.parametrize(
    "damage",
    ["truncate", "garbage", "empty", "wrong-fields", "missing"],
)
def test_damaged_clipy_json_is_a_clear_error(damaged: Path, damage: str) -> None:
    meta = damaged / "clipy.json"
    if damage == "truncate":
        meta.write_bytes(meta.read_bytes()[:20])
    elif damage == "garbage":
        meta.write_bytes(random.Random(f"{SEED}-meta").randbytes(100))
    elif damage == "empty":
        meta.write_bytes(b"")
    elif damage == "wrong-fields":
        meta.write_text('{"version": 1, "encoder": {"name": "fake"}}')
    else:
        meta.unlink()
    result = clipy_run("search", "red shirt", "--store", str(damaged))
    assert result.returncode == 1, result.stdout
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("clipy: error: store") and str(damaged) in result.stderr


def _shard_files(store: Path, pattern: str) -> list[Path]:
    return sorted(p for p in (store / "shard").rglob(pattern) if p.is_file() and p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate-wal", "garbage-wal", "delete-wal"])
def test_damaged_wal_is_a_clear_error_or_recovers(
    damaged: Path, catalog: Catalog, damage: str
) -> None:
    wal = _shard_files(damaged, "open-*") or _shard_files(damaged / "shard" / "wal", "*")
    assert wal, "no WAL file found"
    for file in wal:
        if damage == "truncate-wal":
            with file.open("r+b") as fh:
                fh.truncate(file.stat().st_size // 3)
        elif damage == "garbage-wal":
            with file.open("r+b") as fh:
                fh.seek(64)
                fh.write(random.Random(f"{SEED}-{damage}").randbytes(4096))
        else:
            file.unlink()
    outcome = assert_clear_error_or_sound(damaged, catalog)
    print(f"{damage}: {outcome}")


@pytest.mark.parametrize(
    "target",
    [
        "vector_storage-image",
        "payload_storage",
        "segment.json",
        pytest.param(
            "id_tracker",
            marks=pytest.mark.xfail(
                strict=True,
                reason="qdrant-edge 0.9.0 aborts the opening process (a Rust allocation of the "
                "length it reads from a damaged id tracker); docs/reliability.md",
            ),
        ),
    ],
)
def test_damaged_segment_file_is_a_clear_error_or_recovers(
    damaged: Path, catalog: Catalog, target: str
) -> None:
    files = [
        p
        for p in (damaged / "shard" / "segments").rglob("*")
        if p.is_file() and target in str(p) and p.stat().st_size
    ]
    assert files, f"no {target} file"
    for file in files:
        data = bytearray(file.read_bytes())
        middle = len(data) // 2
        garbage = random.Random(f"{SEED}-{target}-{file.name}")
        data[middle : middle + 512] = garbage.randbytes(min(512, len(data) - middle))
        file.write_bytes(bytes(data))
    outcome = assert_clear_error_or_sound(damaged, catalog)
    print(f"{target}: {outcome}")


# -- the real encoder on a slice of the catalog ----------------------------------------------

REAL_LIMIT = 200


@pytest.mark.catalog
def test_sigkill_with_the_real_encoder_on_a_catalog_slice(tmp_path: Path) -> None:
    """fashion-mini on the first products of the catalog: killed while loading and while
    building the index, each resume equals a clean ingest (the kill points use the seed)."""
    from clipy_qdrant.config import Settings

    catalog = Settings().catalog
    rng = random.Random(SEED)

    def args(store: Path) -> list[str]:
        return [
            sys.executable, "-m", "ingest.cli", "ingest", str(catalog), "--limit",
            str(REAL_LIMIT), "--store", str(store), "--report", str(tmp_path / "r.json"),
        ]  # fmt: skip

    timings = timed_run(args(tmp_path / "clean"))
    clean = snapshot(tmp_path / "clean")
    assert len(clean) == REAL_LIMIT
    points = [
        ("load", float(rng.randrange(REAL_LIMIT // 4, 3 * REAL_LIMIT // 4))),
        ("index", rng.uniform(0.0, 0.8 * (timings["end"] - timings["index"]))),
    ]
    for n, (phase, value) in enumerate(points, 1):
        store = tmp_path / f"store-{n}"
        outcome = run_and_kill(args(store), phase, value)
        print(f"real kill {n}: {phase} {value:.3f} -> {outcome}")
        assert outcome.startswith("killed"), outcome
        resume = subprocess.run(args(store), capture_output=True, env=child_env(), timeout=600)
        assert resume.returncode == 0, resume.stderr[-2000:]
        assert_same_store(snapshot(store), clean)
