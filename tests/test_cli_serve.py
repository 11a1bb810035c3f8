"""``clipy serve`` (issue #16): the real command in a subprocess serving a real store on a
loopback port, the one-line error when another process holds the store, and its flags."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fake_encoder import register_fake
from fastapi.testclient import TestClient
from serve_store import build_store
from typer.testing import CliRunner

import ingest.cli.serve as serve_module
from clipy_qdrant.errors import StoreError
from clipy_qdrant.serve import create_app
from ingest.cli import app
from ingest.cli.shell import build_settings, open_searcher, opened_store

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: ``clipy`` with the fake encoder registered (the store below is written by it).
CLIPY_WITH_FAKE = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from fake_encoder import register_fake; register_fake(); "
    "from ingest.cli import main; sys.argv[0] = 'clipy'; main()"
)
#: ``clipy`` whose first serve worker loads the fake encoder slowly and the others fail to.
CLIPY_WITH_FAILING_WORKERS = CLIPY_WITH_FAKE.replace(
    "register_fake; register_fake()",
    "register_fake_failing_in_later_workers as r; r()",
)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "store"
    build_store(24, path).close()
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clipy(
    *args: str, tmpdir: Path | None = None, log: Any = None, bootstrap: str = CLIPY_WITH_FAKE
) -> subprocess.Popen[str]:
    """``clipy ARGS`` with the fake encoder (registered by ``bootstrap``); its output piped,
    or both streams to ``log`` (an open file)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.Popen(
        [sys.executable, "-c", bootstrap, str(TESTS), *args],
        stdout=log or subprocess.PIPE,
        stderr=log or subprocess.PIPE,
        text=True,
        env=env,
    )


def _listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses listening on ``port`` (Linux's socket table)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _loaded_extensions(pid: int) -> set[str]:
    """The top-level packages of the compiled extensions that process ``pid`` has mapped."""
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split()[-1]
        if path.endswith(".so") and "site-packages/" in path:
            found.add(path.split("site-packages/")[1].split("/")[0])
    return found


def _wait_healthy(process: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            assert _get(base + "/healthz") == {"status": "ok"}
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"clipy serve did not start: {process.communicate()[1]}")
            time.sleep(0.2)


def _search(base: str, text: str, k: int) -> list[str]:
    request = urllib.request.Request(
        base + "/v1/search",
        data=json.dumps({"text": text, "k": k}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return [hit["product_id"] for hit in json.load(response)["hits"]]


def _get(url: str, **headers: str) -> Any:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.mark.parametrize(
    ("stop", "options"),
    [(signal.SIGINT, ()), (signal.SIGTERM, ("--query-cache", "0", "--access-log"))],
)
def test_clipy_serve_serves_the_store_on_loopback(
    store_path: Path, stop: signal.Signals, options: tuple[str, ...]
) -> None:
    port = _free_port()
    process = _clipy("serve", "--store", str(store_path), "--port", str(port), *options)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, base)
        info = _get(base + "/v1/info")
        assert info["products"] == 24 and info["encoder"]["name"] == "fake"
        assert info["store"] == str(store_path)
        request = urllib.request.Request(
            base + "/v1/search",
            data=json.dumps({"text": "red", "k": 3}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert len(json.load(response)["hits"]) == 3
        assert _listening_addresses(port) == {"127.0.0.1"}  # loopback only
        assert (store_path / "clipy.pid").read_text().strip() == str(process.pid)
        # uvicorn answers on its C parts (installed with clipy): httptools parses the
        # requests, uvloop runs the event loop.
        assert _loaded_extensions(process.pid) >= {"httptools", "uvloop"}
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"serving {store_path} (24 products) on http://127.0.0.1:{port}/" in err
    # One line per request (uvicorn's access log, on stdout) only with --access-log.
    assert ('"POST /v1/search HTTP/1.1" 200' in out + err) == ("--access-log" in options)
    assert not (store_path / "clipy.pid").exists()  # the store is closed on the way out


def test_a_held_store_is_one_line_and_exit_1(store_path: Path) -> None:
    from clipy_qdrant.store import open_store

    holder = open_store(store_path)
    try:
        process = _clipy("serve", "--store", str(store_path), "--port", str(_free_port()))
        _, err = process.communicate(timeout=90)
    finally:
        holder.close()
    assert process.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("clipy: error: store")
    assert f"pid {os.getpid()}" in lines[0]


def test_serve_flags_reach_the_app(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_fake()
    captured: dict[str, Any] = {}

    def fake_run(web_app: Any, **kwargs: Any) -> None:
        captured.update(kwargs, app=web_app)
        client = TestClient(web_app)
        captured["info"] = client.get("/v1/info", headers={"X-API-Key": "k3y"}).json()
        captured["cors"] = client.get(
            "/v1/info", headers={"Origin": "https://shop.example", "X-API-Key": "k3y"}
        ).headers.get("access-control-allow-origin")
        captured["no_key"] = client.get("/v1/info").status_code

    monkeypatch.setattr("uvicorn.run", fake_run)
    monkeypatch.setenv("CLIPY_SERVE_API_KEY", "k3y")
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--store",
            str(store_path),
            "--host",
            "0.0.0.0",
            "--port",
            "9123",
            "--cors-origin",
            "https://shop.example",
        ],
    )
    assert result.exit_code == 0, result.output
    assert captured["host"] == "0.0.0.0" and captured["port"] == 9123
    assert captured["info"]["auth"] is True and captured["info"]["products"] == 24
    assert captured["cors"] == "https://shop.example"
    assert captured["no_key"] == 401
    assert "k3y" not in result.output  # the key is never printed

    monkeypatch.delenv("CLIPY_SERVE_API_KEY")
    result = CliRunner().invoke(app, ["serve", "--store", str(store_path), "--host", "0.0.0.0"])
    assert "without a key" in result.output


def test_loopback_is_the_default_host() -> None:
    import inspect

    default = inspect.signature(serve_module.serve).parameters["host"].default
    assert default == "127.0.0.1"
    assert serve_module._is_loopback("127.0.0.1") and serve_module._is_loopback("::1")
    assert not serve_module._is_loopback("0.0.0.0")


def test_a_port_in_use_is_one_line_and_exit_1(store_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _clipy("serve", "--store", str(store_path), "--port", str(port))
        _, err = process.communicate(timeout=90)
    assert process.returncode == 1
    assert err.strip() == f"clipy: error: cannot listen on 127.0.0.1:{port}: Address already in use"


# -- --workers: several processes, the first on the store, each other one on a copy of it --


def _holder_pid(store: Path) -> int:
    """The pid the lock error names when ``store`` is held open by another process."""
    from clipy_qdrant.store import open_store

    with pytest.raises(StoreError, match="held open by another clipy process") as caught:
        open_store(store).close()
    found = re.search(r"\(pid (\d+)\)", str(caught.value))
    assert found, caught.value
    return int(found.group(1))


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def _dead_pid() -> int:
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


def _serve_workers(store: Path, tmpdir: Path, log: Path, port: int) -> subprocess.Popen[str]:
    """``clipy serve --workers 2`` with its output in ``log``, once it says that every worker
    is ready (before that, one worker may answer while the other still opens its copy)."""
    args = ("serve", "--workers", "2", "--store", str(store), "--port", str(port))
    with log.open("w") as out:
        process = _clipy(*args, tmpdir=tmpdir, log=out)
    deadline = time.monotonic() + 120
    while "from 2 worker processes" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"clipy serve --workers 2 did not start: {log.read_text()}")
        time.sleep(0.2)
    return process


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_workers_serve_from_their_own_copies_of_the_store(
    store_path: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    tmpdir = tmp_path / "tmp"
    # A copy left by a server that was killed (its pid runs no more) is removed at start; one
    # whose process runs stays.
    stale = tmpdir / f"clipy-serve-{_dead_pid()}-x" / "worker-0"
    stale.mkdir(parents=True)
    live = tmpdir / f"clipy-serve-{os.getpid()}-y"
    live.mkdir()
    port = _free_port()
    log = tmp_path / "serve.log"
    process = _serve_workers(store_path, tmpdir, log, port)
    base = f"http://127.0.0.1:{port}"
    try:
        copies = list(tmpdir.glob(f"clipy-serve-{process.pid}-*/worker-*"))
        assert [copy.name for copy in copies] == ["worker-1"]
        assert not stale.parent.exists() and live.exists()
        # The first worker holds the store (so nothing writes to it while the copy serves),
        # the second its copy: two processes of the server.
        workers = {_holder_pid(store_path), _holder_pid(copies[0])}
        assert len(workers) == 2 and all(_parent_pid(pid) == process.pid for pid in workers)
        info = _get(base + "/v1/info")
        assert info["store"] == str(store_path) and info["products"] == 24
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _search(base, "red", 5), range(32)))
    finally:
        process.send_signal(stop)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()  # its workers follow it (they watch it)
            process.wait()
            raise
    err = log.read_text()
    assert process.returncode == 0, err
    assert (
        f"serving {store_path} (24 products) on http://127.0.0.1:{port}/ from 2 worker processes"
        in err
    )
    assert not list(tmpdir.glob(f"clipy-serve-{process.pid}-*"))  # the copies are removed
    assert not (store_path / "clipy.pid").exists()  # and the store closed
    # Every concurrent request is answered as one process answers it.
    register_fake()
    vector_store, searcher = open_searcher(build_settings(store=store_path))
    try:
        one = TestClient(create_app(searcher)).post("/v1/search", json={"text": "red", "k": 5})
    finally:
        vector_store.close()
    assert answers == [[hit["product_id"] for hit in one.json()["hits"]]] * 32


def test_a_worker_that_dies_stops_the_server(store_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    process = _serve_workers(store_path, tmp_path, log, _free_port())
    try:
        copy = next(tmp_path.glob(f"clipy-serve-{process.pid}-*/worker-1"))
        victim = _holder_pid(copy)
        os.kill(victim, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert (
        f"clipy: error: worker clipy-serve-worker-1 (pid {victim}) exited with code -9; "
        "the server stops"
    ) in log.read_text().splitlines()
    assert not list(tmp_path.glob("clipy-serve-*"))
    assert not (store_path / "clipy.pid").exists()


def test_a_worker_that_cannot_start_is_one_line_and_exit_1(
    store_path: Path, tmp_path: Path
) -> None:
    args = ("serve", "--workers", "2", "--store", str(store_path), "--encoder", "no-such")
    process = _clipy(*args, "--port", str(_free_port()), tmpdir=tmp_path)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    errors = [line for line in err.splitlines() if line.startswith("clipy: error:")]
    assert len(errors) == 1 and "no-such" in errors[0], err
    assert not list(tmp_path.glob("clipy-serve-*"))
    assert not (store_path / "clipy.pid").exists()


def test_a_worker_stopped_while_it_starts_closes_the_store(
    store_path: Path, tmp_path: Path
) -> None:
    """Worker 1 fails to load its encoder while worker 0, holding the store, still loads its
    own: the server stops worker 0, which closes the store rather than die holding it."""
    args = ("serve", "--workers", "2", "--store", str(store_path), "--port", str(_free_port()))
    started = time.monotonic()
    process = _clipy(*args, tmpdir=tmp_path, bootstrap=CLIPY_WITH_FAILING_WORKERS)
    _, err = process.communicate(timeout=120)
    assert time.monotonic() - started < 50  # worker 0 was stopped, not waited for
    assert process.returncode == 1
    errors = [line for line in err.splitlines() if line.startswith("clipy: error:")]
    assert errors == ["clipy: error: this worker cannot load the fake encoder"], err
    assert not list(tmp_path.glob("clipy-serve-*"))
    assert not (store_path / "clipy.pid").exists()
    with opened_store(build_settings(store=store_path)) as vector_store:  # and it opens again
        assert vector_store.count() == 24


def test_workers_refuse_a_store_that_lives_in_one_process() -> None:
    port = str(_free_port())
    args = ["serve", "--workers", "2", "--qdrant-url", ":memory:", "--port", port]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.output.strip() == (
        "clipy: error: --workers 2 needs a store the workers share (a store folder or a Qdrant "
        "server URL); ':memory:' lives inside one process"
    )


def test_each_worker_gets_its_share_of_the_cores_for_its_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers' encoders on every core each would crowd each other: each gets its share,
    at least one thread; threads set by the user stay as they are."""
    from clipy_qdrant.config import Settings
    from ingest.cli.workers import worker_settings

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert worker_settings(Settings(serve_workers=2)).encoder_threads == 2
    assert worker_settings(Settings(serve_workers=3)).encoder_threads == 1
    assert worker_settings(Settings(serve_workers=8)).encoder_threads == 1
    assert worker_settings(Settings(serve_workers=2, encoder_threads=3)).encoder_threads == 3
    monkeypatch.setenv("CLIPY_ENCODER_THREADS", "1")
    assert Settings(serve_workers=1).encoder_threads == 1


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie that nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_workers_stop_when_their_server_is_killed(store_path: Path, tmp_path: Path) -> None:
    from clipy_qdrant.store import open_store

    process = _serve_workers(store_path, tmp_path, tmp_path / "serve.log", _free_port())
    copy = next(tmp_path.glob(f"clipy-serve-{process.pid}-*/worker-1"))
    workers = [_holder_pid(store_path), _holder_pid(copy)]
    process.kill()  # no clean-up from the server itself
    process.wait()
    deadline = time.monotonic() + 30
    while not all(_exited(pid) for pid in workers):
        assert time.monotonic() < deadline, "the workers serve on without their server"
        time.sleep(0.2)
    open_store(store_path).close()  # the first worker closed the store on its way out
    open_store(copy).close()
