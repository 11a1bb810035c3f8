"""A scripted HTTP server on loopback (127.0.0.1, a free port) for the image-fetch tests.

Each path answers with a list of :class:`Reply` objects, one per request in turn (the last one
repeats); every request is counted per path, so a test can assert that a cached URL makes no
request at all.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "image/jpeg"
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before the status line.
    delay_s: float = 0.0
    #: Send the body in pieces of this size with ``piece_delay_s`` between them (0: at once).
    piece: int = 0
    piece_delay_s: float = 0.0
    #: Send a Content-Length header (False: the body ends when the connection closes).
    content_length: bool = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still sleeping must not hold up the test's teardown


class ScriptedServer:
    """``server.route("/a.jpg", Reply(...), ...)``; ``server.url("/a.jpg")``; ``server.hits``."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def do_GET(self) -> None:
                with scripted._lock:
                    n = scripted.hits[self.path]
                    scripted.hits[self.path] += 1
                    replies = scripted.routes.get(self.path)
                reply = (
                    replies[min(n, len(replies) - 1)]
                    if replies
                    else Reply(404, b"no such page", "text/plain")
                )
                try:
                    self._answer(reply)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def _answer(self, reply: Reply) -> None:
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                self.send_response(reply.status)
                if reply.content_type is not None:
                    self.send_header("Content-Type", reply.content_type)
                if reply.content_length:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("Connection", "close")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if not reply.piece:
                    self.wfile.write(reply.body)
                    return
                for start in range(0, len(reply.body), reply.piece):
                    self.wfile.write(reply.body[start : start + reply.piece])
                    self.wfile.flush()
                    if reply.piece_delay_s:
                        time.sleep(reply.piece_delay_s)
                self.close_connection = True

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def route(self, path: str, *replies: Reply) -> str:
        """Script ``path``; returns its full URL."""
        self.routes[path] = list(replies)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def total_hits(self) -> int:
        return sum(self.hits.values())

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def serve() -> Iterator[ScriptedServer]:
    """Generator for a pytest fixture: a started server, stopped afterwards."""
    server = ScriptedServer().start()
    try:
        yield server
    finally:
        server.stop()
