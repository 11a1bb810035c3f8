"""``clipy serve --workers N``: N processes answer on one listening socket.

One process's requests share one interpreter lock and one engine, which answers one call at
a time (docs/benchmarks.md, "HTTP API under load"); N processes have N of each. The parent
binds the socket, starts the workers (``spawn``: no thread or engine state is inherited) and
supervises them; the kernel hands each new connection to one worker.

Stores:

- embedded: the store admits one process. The parent opens it, copies it once per worker
  but the first (:meth:`~clipy_qdrant.store.edge.EdgeStore.replicate`) into a temporary
  folder (``TMPDIR``, removed when the server stops) and closes it; the first worker opens
  the store itself and holds it while it serves, so that no other process (an ingest)
  writes to it; each other worker opens its copy. N workers cost N - 1 times the store's
  size on disk and N times its memory.
- a Qdrant server: each worker opens its own client; nothing is copied.

Each worker loads the encoder, warms it up and says it is ready; a worker that fails to start
stops the server with its one-line error. A worker that exits while serving stops the others
(exit 1). SIGINT or SIGTERM stops every worker gracefully; a worker whose server is killed
stops by itself.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from clipy_qdrant.config import Settings
from clipy_qdrant.encoders import EncoderFactory
from clipy_qdrant.errors import ClipyError, ConfigError
from clipy_qdrant.serve import ServeOptions
from clipy_qdrant.store.edge import process_alive

#: The temporary folder of a server's store copies: this prefix, the server's pid, a suffix.
COPIES_PREFIX = "clipy-serve-"
#: Seconds a worker has to load its store and encoder and say it is ready.
START_TIMEOUT_S = 300.0
#: How often a worker checks that its server still runs (seconds).
PARENT_CHECK_S = 1.0
#: Seconds the workers have to finish their requests after SIGTERM before they are killed.
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process needs; sent to it pickled."""

    index: int
    settings: Settings
    hubness: float | None
    query_cache: int
    options: ServeOptions
    access_log: bool
    encoders: dict[str, EncoderFactory]


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def run_worker(spec: WorkerSpec, sock: socket.socket, ready: Any) -> None:
    """A worker's life: open its store and encoder, report ``("ready", index)`` (or
    ``("error", index, message)`` and exit 1), then serve ``sock`` until stopped."""
    import uvicorn

    from clipy_qdrant.encoders import register_encoder
    from clipy_qdrant.encoders.blas import one_blas_thread
    from clipy_qdrant.serve import create_app
    from ingest.cli.shell import open_searcher

    # Until uvicorn serves (it then handles SIGINT and SIGTERM itself), a Ctrl-C in the
    # terminal, which reaches every process of the group, is the server's to handle: it
    # stops the workers. The server's SIGTERM (another worker failed to start) unwinds this
    # one, so that a store it holds is closed rather than left with its lock file.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    for name, factory in spec.encoders.items():
        register_encoder(name, factory)
    try:
        vector_store, searcher = open_searcher(
            spec.settings, spec.hubness, query_cache=spec.query_cache
        )
    except ClipyError as exc:
        ready.put(("error", spec.index, str(exc)))
        raise SystemExit(1) from None
    try:
        web_app = create_app(searcher, spec.options)
        one_blas_thread()
        searcher.embed("warm up")
        searcher.preload()
        ready.put(("ready", spec.index))
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
        # As in one process: uvicorn stops gracefully, then raises the signal again with
        # the handler above, so that the store is closed below.
        config = uvicorn.Config(
            web_app, log_level="info", access_log=spec.access_log, server_header=False
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        vector_store.close()


def _exit_with_parent(parent: int) -> None:
    """Stop this worker (SIGTERM: uvicorn's graceful stop, then the store is closed) once its
    server is gone, e.g. killed with SIGKILL, rather than serve on as an orphan."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os.kill(os.getpid(), signal.SIGTERM)


def worker_settings(settings: Settings) -> Settings:
    """The settings each of ``settings.serve_workers`` workers runs with: unless they set
    the encoder's threads, its share of the cores this process may run on (at least one),
    so that the workers' encoders do not each spread over every core: on one thread an
    encode costs less CPU (docs/experiments.md, "Serving throughput levers")."""
    if settings.encoder_threads is not None:
        return settings
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // settings.serve_workers)
    return settings.model_copy(update={"encoder_threads": threads})


def bind(host: str, port: int) -> socket.socket:
    """The listening socket the workers share (``host``'s first address, as uvicorn binds)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class Workers:
    """The worker processes of one server: started by :meth:`start`, watched by :meth:`wait`,
    stopped and their copies removed by :meth:`stop`."""

    def __init__(self, specs: list[WorkerSpec], sock: socket.socket, copies: Path | None):
        self.specs = specs
        self.sock = sock
        self.copies = copies
        self._context = multiprocessing.get_context("spawn")
        self._ready: Any = self._context.Queue()
        self.processes: list[BaseProcess] = []

    def start(self) -> None:
        """Start every worker and wait until each is ready; a worker's start-up error (or a
        worker that dies or does not report in time) stops them all and raises it."""
        for spec in self.specs:
            process = self._context.Process(
                target=run_worker,
                args=(spec, self.sock, self._ready),
                name=f"clipy-serve-worker-{spec.index}",
            )
            process.start()
            self.processes.append(process)
        waiting = {spec.index for spec in self.specs}
        deadline = time.monotonic() + START_TIMEOUT_S
        while waiting:
            # A worker that died says why first: what it sent is read before its exit code.
            dead = [p for p in self.processes if p.exitcode is not None]
            try:
                message = self._ready.get(timeout=0.05 if dead else 0.5)
            except queue_module.Empty:
                if dead:
                    raise ConfigError(
                        f"worker {dead[0].name} exited with code {dead[0].exitcode} while starting"
                    ) from None
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"{len(waiting)} worker(s) not ready after {START_TIMEOUT_S:.0f} s"
                    ) from None
                continue
            if message[0] == "error":
                raise ConfigError(str(message[2]))
            waiting.discard(int(message[1]))

    def wait(self) -> BaseProcess:
        """Block until a worker exits; the first one that did."""
        by_sentinel = {p.sentinel: p for p in self.processes}
        ended = by_sentinel[wait(list(by_sentinel))[0]]  # type: ignore[index]
        ended.join()  # its sentinel closes as it exits, a moment before it can be reaped
        return ended

    def stop(self) -> None:
        """SIGTERM every live worker (uvicorn finishes the requests in flight), kill the
        ones still running after :data:`STOP_TIMEOUT_S`, remove the store copies. A second
        SIGINT or SIGTERM meanwhile (a supervisor's, a repeated Ctrl-C) is ignored: the stop
        is bounded and must finish."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for process in self.processes:
            if process.exitcode is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()
        self._ready.close()
        self.sock.close()
        if self.copies is not None:
            shutil.rmtree(self.copies, ignore_errors=True)


def prepare(
    vector_store: Any, settings: Settings, count: int, make_spec: Any
) -> tuple[list[WorkerSpec], Path | None]:
    """The workers' specs: with an embedded store, the first names the store and each other
    one its own copy of it (made here, in one new temporary folder, returned for removal);
    with a server, every one the settings as given."""
    from clipy_qdrant.store.edge import EdgeStore

    if settings.qdrant_url == ":memory:":
        raise ConfigError(
            f"--workers {count} needs a store the workers share (a store folder or a Qdrant "
            "server URL); ':memory:' lives inside one process"
        )
    if not isinstance(vector_store, EdgeStore):
        return [make_spec(i, settings) for i in range(count)], None
    _remove_stale_copies()
    try:
        copies = Path(tempfile.mkdtemp(prefix=f"{COPIES_PREFIX}{os.getpid()}-"))
    except OSError as exc:
        raise ConfigError(
            f"cannot make the workers' store copies in {tempfile.gettempdir()}: {exc.strerror}"
        ) from None
    try:
        specs = [make_spec(0, settings)]
        for i in range(1, count):
            copy = vector_store.replicate(copies / f"worker-{i}")
            specs.append(make_spec(i, settings.model_copy(update={"store": copy})))
    except BaseException:
        shutil.rmtree(copies, ignore_errors=True)
        raise
    return specs, copies


def _remove_stale_copies() -> None:
    """Remove the store copies of servers that were killed before they could (their pid is
    not running any more)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{COPIES_PREFIX}*-*"):
        pid = folder.name[len(COPIES_PREFIX) :].partition("-")[0]
        if pid.isdigit() and folder.is_dir() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
