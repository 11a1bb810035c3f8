"""The Qdrant API key (``CLIPY_API_KEY`` / ``--api-key``) never shows: not in errors (a server
URL on a closed loopback port), not in ``clipy info``, not in the ingest report or its
summary, not in any file a command writes."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from corpus import GOOD, write_csv, write_good_images
from test_crash_resume import child_env, clipy

SECRET = "clipy-SECRET-key-7f3a9c1e"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(args: list[str], cwd: Path, via: str) -> subprocess.CompletedProcess[str]:
    env = child_env()
    env.pop("CLIPY_API_KEY", None)
    if via in ("env", "both"):
        env["CLIPY_API_KEY"] = SECRET
    if via in ("flag", "both"):
        args = [*args, "--api-key", SECRET]
    return subprocess.run(
        clipy(*args), capture_output=True, text=True, env=env, cwd=cwd, timeout=180
    )


def assert_nowhere(result: subprocess.CompletedProcess[str], folder: Path) -> None:
    assert SECRET not in result.stdout and SECRET not in result.stderr
    assert SECRET[:12] not in result.stdout + result.stderr  # not even a prefix
    for file in folder.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file


@pytest.mark.parametrize("via", ["env", "flag"])
def test_connection_error_does_not_show_the_key(via: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    for args in (["search", "red", "--qdrant-url", url], ["info", "--qdrant-url", url]):
        result = run(args, tmp_path, via)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("clipy: error:")
        assert_nowhere(result, tmp_path)


def test_ingest_report_info_and_verify_do_not_show_the_key(tmp_path: Path) -> None:
    via = "both"  # the key in CLIPY_API_KEY and in --api-key
    write_good_images(tmp_path / "images")
    source = write_csv(tmp_path / "styles.csv", GOOD)
    url = f"http://127.0.0.1:{closed_port()}"
    ingest = run(["ingest", str(source), "--qdrant-url", url, "--encoder", "fake"], tmp_path, via)
    assert ingest.returncode == 1
    assert_nowhere(ingest, tmp_path)
    # A working (in-memory) qdrant-client: the report, the summary, info and verify.
    ok = run(
        ["ingest", str(source), "--qdrant-url", ":memory:", "--encoder", "fake", "--report",
         str(tmp_path / "report.json")],
        tmp_path,
        via,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "report.json").exists()
    for args in (
        ["info", "--qdrant-url", ":memory:", "--json"],
        ["verify", "--qdrant-url", ":memory:"],
    ):
        assert_nowhere(run(args, tmp_path, via), tmp_path)
    assert_nowhere(ok, tmp_path)


def test_settings_repr_hides_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from clipy_qdrant.config import Settings

    monkeypatch.setenv("CLIPY_API_KEY", SECRET)
    settings = Settings()
    assert SECRET not in repr(settings) and SECRET not in str(settings)
