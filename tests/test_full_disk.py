"""A full disk (issue #19): the store lives on a small tmpfs (mounted here when running as
root); another process fills the disk in the middle of an ingest. ``clipy ingest`` stops
with one line naming the store and the free space, the store still opens with everything
it had, and the same command, once space is freed, resumes and completes.

The engine writes through memory maps, where a full disk is a SIGBUS, not an error; clipy
therefore keeps ``DISK_RESERVE_BYTES`` free and stops at that margin (ingest/cli/ingest.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_crash_resume import child_env, clipy, make_catalog

from clipy_qdrant.store import open_store
from clipy_qdrant.store.verify import verify_store
from ingest.cli.ingest import DISK_RESERVE_BYTES

PRODUCTS = 400
MIB = 2**20


@contextlib.contextmanager
def small_disk(root: Path, size_mib: int) -> Iterator[Path]:
    """A tmpfs of ``size_mib`` at ``root``, unmounted afterwards (needs root)."""
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("full-disk tests mount a tmpfs, which needs root (run the suite as root/CI)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(root)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill ``disk`` until ``leave_bytes`` are free (the filler file is returned)."""
    filler = disk / "filler.bin"
    size = max(1, shutil.disk_usage(disk).free - leave_bytes)
    with filler.open("wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, size)
    return filler


def test_disk_filling_mid_ingest_is_a_clear_error_and_resumes(tmp_path: Path) -> None:
    source = make_catalog(tmp_path / "cat", PRODUCTS, seed=7)
    with small_disk(tmp_path / "disk", 480) as disk:
        store = disk / "store"
        args = clipy(
            "ingest", str(source), "--store", str(store), "--encoder", "fake",
            "--batch-size", "16", "--report", str(tmp_path / "r.json"),
        )  # fmt: skip
        proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=False, env=child_env())
        assert proc.stderr is not None
        buffer = b""
        filler = None
        while chunk := proc.stderr.read1(4096):  # type: ignore[attr-defined]
            buffer += chunk
            counts = re.findall(rb"(\d+)/\d+ \[", buffer)
            if filler is None and counts and int(counts[-1]) >= 64:
                # Another process takes the disk: less than clipy's reserve is left, but more
                # than the engine's two WAL segments (32 MiB each), which opening a store writes (with
                # less, even opening it is a SIGBUS; see docs/reliability.md).
                # The ingest is paused meanwhile, so the disk fills between two of its batches.
                proc.send_signal(signal.SIGSTOP)
                filler = fill(disk, DISK_RESERVE_BYTES * 3 // 4)
                proc.send_signal(signal.SIGCONT)
        code = proc.wait()
        err = buffer.decode(errors="replace")
        last = err.strip().splitlines()[-1]
        assert filler is not None, "the ingest finished before the disk could be filled"
        assert code == 1, err[-2000:]
        assert last.startswith(f"clipy: error: store {store}: only ")
        assert "MiB free on its disk" in last and "run the same command again" in last
        assert "Traceback" not in err

        with open_store(store) as opened:  # type: ignore[attr-defined]
            kept = opened.count()
        assert 0 < kept < PRODUCTS

        filler.unlink()  # space is freed
        resumed = subprocess.run(args, capture_output=True, text=True, env=child_env())
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        with open_store(store) as opened:  # type: ignore[attr-defined]
            report = verify_store(opened)
        assert report.ok and report.points == PRODUCTS, report.problems


def test_too_little_space_to_start_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    source = make_catalog(tmp_path / "cat", 20, seed=8)
    with small_disk(tmp_path / "disk", 8) as disk:
        result = subprocess.run(
            clipy(
                "ingest",
                str(source),
                "--store",
                str(disk / "store"),
                "--encoder",
                "fake",
                "--report",
                str(tmp_path / "r.json"),
            ),
            capture_output=True,
            text=True,
            env=child_env(),
        )
        assert result.returncode == 1
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "MiB free on its disk" in result.stderr
        assert not (disk / "store").exists()


def test_report_on_a_full_disk_is_one_line(tmp_path: Path) -> None:
    """The report file itself cannot be written (ENOSPC): one line, exit 1, no traceback."""
    source = make_catalog(tmp_path / "cat", 20, seed=9)
    with small_disk(tmp_path / "disk", 1) as disk:
        fill(disk, 0)
        result = subprocess.run(
            clipy(
                "ingest",
                str(source),
                "--store",
                str(tmp_path / "store"),
                "--encoder",
                "fake",
                "--report",
                str(disk / "report.json"),
            ),
            capture_output=True,
            text=True,
            env=child_env(),
        )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("clipy: error: disk full") and "No space left" in last
    assert "Traceback" not in result.stderr
