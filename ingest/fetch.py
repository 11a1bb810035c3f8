"""Image URLs fetched concurrently into a persistent cache, every failure reported per URL.

:class:`ImageFetcher` downloads ``http`` / ``https`` image URLs in a thread pool with the
standard library (``http.client``), one connection per request:

- a request has ``timeout_s`` for the whole exchange (connect, headers and body), checked
  between reads, so a server that trickles bytes cannot hold a worker for longer;
- timeouts, connection errors, 429 and 5xx are retried ``retries`` times with exponential
  backoff (``backoff_s * 2**attempt``, or the server's ``Retry-After`` when shorter than
  ``max_backoff_s``); other statuses (404, 403…) fail at once;
- redirects are followed up to ``max_redirects`` hops; a URL seen twice is a redirect loop;
- a body is streamed and abandoned past ``max_bytes`` (also when ``Content-Length`` says so);
- a declared ``Content-Type`` must be ``image/*`` (or missing / ``application/octet-stream``),
  and the first bytes must be an image format's signature (JPEG, PNG, GIF, WebP, BMP, TIFF,
  AVIF/HEIF);
- only ``http`` and ``https`` URLs are fetched, also as redirect targets: catalog data never
  makes clipy read local files (``file://``) or other schemes.

The cache is a folder (by convention ``<store>/image-cache``): one file per URL, named by
``sha256(url)`` (under a two-character sub-folder), written to a temporary file and renamed
into place, so a killed run leaves no partial image behind. Only successful downloads are
cached; a failure is retried by the next run. A URL already cached is never requested again,
and a URL listed several times in one batch is requested once.

Each failure is a short reason in :attr:`FetchResult.error`: ``"404 Not Found"``, ``"timed out
after 10 s"``, ``"not an image (text/html)"``, ``"too large (> 20 MB)"``, ``"redirect loop"``…
A failure never stops the batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import os
import random
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from clipy_qdrant.errors import ConfigError
from ingest.catalog import Catalog
from ingest.records import Product

#: Folder name of the image cache inside a store folder.
CACHE_DIR_NAME = "image-cache"
SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Content types that say nothing about the content; the signature decides.
UNTYPED = frozenset({"", "application/octet-stream", "binary/octet-stream"})
USER_AGENT = "clipy-image-fetcher/0.1"
_CHUNK = 64 * 1024


def sniff_image(head: bytes) -> str | None:
    """The image format whose signature ``head`` starts with, or ``None``."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1"):
        return "avif" if head[8:11] == b"avi" else "heif"
    return None


@dataclass(frozen=True)
class FetchResult:
    """The outcome for one URL: the image (``data`` and its cache file ``path``) or ``error``."""

    url: str
    data: bytes | None = None
    path: Path | None = None
    error: str | None = None
    from_cache: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class _Failure(Exception):
    """One attempt failed; ``retry`` says whether another attempt may succeed."""

    def __init__(self, reason: str, *, retry: bool, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.wait_s = wait_s


def _megabytes(n: int) -> str:
    return f"{n / 1e6:g} MB" if n >= 1_000_000 else f"{n:,} bytes"


def _seconds(s: float) -> str:
    return f"{s:g} s"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None  # an HTTP date: use our own backoff


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be fetched (scheme, host), or ``None`` when it can."""
    if not url or not url.strip():
        return "empty URL"
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        return f"malformed URL ({exc})"
    if parts.scheme.lower() not in SCHEMES:
        shown = parts.scheme or "none"
        return f"unsupported URL scheme {shown!r} (only http and https)"
    if not parts.hostname:
        return "URL has no host"
    return None


class ImageFetcher:
    """Fetches image URLs into ``cache_dir``; see the module docstring for the rules.

    ``progress`` shows a tqdm bar on stderr during :meth:`fetch_many`. ``keep_data=False``
    leaves :attr:`FetchResult.data` empty (the image is in :attr:`FetchResult.path`), for
    large batches.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        *,
        workers: int = 8,
        timeout_s: float = 10.0,
        retries: int = 3,
        max_bytes: int = 20_000_000,
        max_redirects: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        progress: bool = True,
        keep_data: bool = True,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"fetch workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ConfigError(f"fetch timeout must be > 0 s, got {timeout_s}")
        if retries < 0:
            raise ConfigError(f"fetch retries must be >= 0, got {retries}")
        if max_bytes < 1:
            raise ConfigError(f"image size cap must be >= 1 byte, got {max_bytes}")
        if max_redirects < 0:
            raise ConfigError(f"max redirects must be >= 0, got {max_redirects}")
        self.cache_dir = Path(cache_dir)
        self.workers = workers
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.progress = progress
        self.keep_data = keep_data
        self._ssl: ssl.SSLContext | None = None
        self._ssl_lock = threading.Lock()

    # ------------------------------------------------------------------ cache

    def cache_path(self, url: str) -> Path:
        """Where the image of ``url`` is (or will be) cached."""
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.cache_dir / digest[:2] / digest

    def cached(self, url: str) -> FetchResult | None:
        """The cached image of ``url``, or ``None`` (a damaged cache file counts as absent)."""
        path = self.cache_path(url)
        try:
            with path.open("rb") as handle:
                head = handle.read(16)
                if sniff_image(head) is None:
                    return None
                data = head + handle.read() if self.keep_data else None
        except OSError:
            return None
        return FetchResult(url, data, path, None, from_cache=True)

    def _store(self, url: str, data: bytes) -> Path:
        path = self.cache_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path

    # ------------------------------------------------------------------ fetching

    def fetch(self, url: str) -> FetchResult:
        """Fetch one URL (from the cache when there), with retries; never raises for bad URLs."""
        problem = check_url(url)
        if problem is not None:
            return FetchResult(url, error=problem)
        hit = self.cached(url)
        if hit is not None:
            return hit
        attempt = 0
        while True:
            try:
                data = self._download(url.strip())
            except _Failure as failure:
                if not failure.retry or attempt >= self.retries:
                    return FetchResult(url, error=failure.reason)
                time.sleep(self._backoff(attempt, failure.wait_s))
                attempt += 1
                continue
            try:
                path = self._store(url, data)
            except OSError as exc:
                return FetchResult(url, error=f"cannot write the image cache: {exc}")
            return FetchResult(url, data if self.keep_data else None, path)

    def fetch_many(
        self, urls: Iterable[str], *, progress: bool | None = None
    ) -> dict[str, FetchResult]:
        """Fetch every URL concurrently; ``{url: FetchResult}`` for each distinct URL given."""
        unique = list(dict.fromkeys(urls))
        results: dict[str, FetchResult] = {}
        pending: list[str] = []
        for url in unique:
            hit = self.cached(url) if check_url(url) is None else None
            if hit is not None:
                results[url] = hit
            else:
                pending.append(url)
        from tqdm import tqdm

        show = self.progress if progress is None else progress
        with tqdm(
            total=len(unique),
            initial=len(results),
            unit="image",
            desc="fetch",
            file=sys.stderr,
            disable=not show,
            dynamic_ncols=True,
        ) as bar:
            if pending:
                pool = ThreadPoolExecutor(
                    min(self.workers, len(pending)), thread_name_prefix="fetch"
                )
                try:
                    futures = {pool.submit(self.fetch, url): url for url in pending}
                    failed = 0
                    for future in as_completed(futures):
                        result = future.result()
                        results[futures[future]] = result
                        failed += not result.ok
                        bar.set_postfix(failed=failed, refresh=False)
                        bar.update(1)
                finally:
                    # On Ctrl-C, drop the queued URLs instead of fetching them all first.
                    pool.shutdown(wait=True, cancel_futures=True)
        return {url: results[url] for url in unique}

    def _backoff(self, attempt: int, server_wait_s: float | None) -> float:
        if server_wait_s is not None and server_wait_s <= self.max_backoff_s:
            return server_wait_s
        wait = self.backoff_s * (2**attempt)
        return min(self.max_backoff_s, wait * (1 + 0.1 * random.random()))

    def _ssl_context(self) -> ssl.SSLContext:
        with self._ssl_lock:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            return self._ssl

    def _download(self, url: str) -> bytes:
        """One attempt: follow redirects, check the response, read the body under the caps."""
        deadline = time.monotonic() + self.timeout_s
        seen = {url}
        for _ in range(self.max_redirects + 1):
            status, reason, location, body = self._request(url, deadline)
            if body is not None:
                return body
            if not location:
                raise _Failure(f"{status} {reason} without a Location header", retry=False)
            target = urljoin(url, location)
            problem = check_url(target)
            if problem is not None:
                raise _Failure(f"redirect to a bad URL: {problem}", retry=False)
            if target in seen:
                raise _Failure("redirect loop", retry=False)
            seen.add(target)
            url = target
        raise _Failure(f"too many redirects (> {self.max_redirects})", retry=False)

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Failure(f"timed out after {_seconds(self.timeout_s)}", retry=True)
        return left

    def _request(self, url: str, deadline: float) -> tuple[int, str, str | None, bytes | None]:
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn: http.client.HTTPConnection
        try:
            port = parts.port
        except ValueError:
            raise _Failure("URL has a bad port", retry=False) from None
        host = parts.hostname or ""
        timeout = self._remaining(deadline)
        if parts.scheme.lower() == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=self._ssl_context()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(
                "GET",
                target,
                headers={
                    "User-Agent": USER_AGENT,
                    "Accept": "image/*",
                    "Accept-Encoding": "identity",
                },
            )
            # The connection drops its socket once the response says "close"; keep it to
            # shorten the read timeout as the deadline nears.
            sock = conn.sock
            if sock is not None:
                sock.settimeout(self._remaining(deadline))
            response = conn.getresponse()
            status = response.status
            reason = response.reason or http.client.responses.get(status, "")
            if status in REDIRECT_STATUSES:
                return status, reason, response.getheader("Location"), None
            if status != 200:
                retry = status == 429 or status >= 500
                wait = _retry_after(response.getheader("Retry-After")) if retry else None
                raise _Failure(f"{status} {reason}".strip(), retry=retry, wait_s=wait)
            content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if content_type not in UNTYPED and not content_type.startswith("image/"):
                raise _Failure(f"not an image ({content_type})", retry=False)
            length = response.getheader("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
                raise _Failure(f"too large (> {_megabytes(self.max_bytes)})", retry=False)
            body = self._read_body(sock, response, deadline)
        except _Failure:
            raise
        except TimeoutError:
            raise _Failure(f"timed out after {_seconds(self.timeout_s)}", retry=True) from None
        except socket.gaierror as exc:
            raise _Failure(f"cannot resolve host {host} ({exc.strerror})", retry=False) from None
        except ssl.SSLCertVerificationError as exc:
            raise _Failure(
                f"TLS certificate rejected ({exc.verify_message})", retry=False
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise _Failure(f"connection failed ({detail})", retry=True) from None
        finally:
            conn.close()
        if sniff_image(body[:16]) is None:
            declared = content_type or "no content type"
            raise _Failure(f"not an image ({declared}, but the content is not)", retry=False)
        return status, reason, None, body

    def _read_body(
        self, sock: socket.socket | None, response: http.client.HTTPResponse, deadline: float
    ) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            left = self._remaining(deadline)
            if sock is not None:
                sock.settimeout(left)
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > self.max_bytes:
                raise _Failure(f"too large (> {_megabytes(self.max_bytes)})", retry=False)
            chunks.append(chunk)
        return b"".join(chunks)


# --------------------------------------------------------------------------- products


class ImageURLCatalog(Catalog):
    """Wraps a catalog whose products carry ``image_url``: fetches them in chunks, in order.

    Each product with an ``image_url`` (and no other image) comes out as a copy with
    ``image_path`` = its cache file, or, when its image cannot be fetched, with ``error =
    "image <url>: <reason>"``, so the pipeline reports it with its location and goes on.
    ``source``, ``kind`` and ``total`` are the wrapped catalog's, so the pipeline's report and
    progress bar stay the same.
    """

    def __init__(
        self, catalog: Iterable[Product], fetcher: ImageFetcher, *, chunk_size: int = 256
    ) -> None:
        if chunk_size < 1:
            raise ConfigError(f"chunk size must be >= 1, got {chunk_size}")
        super().__init__(str(getattr(catalog, "source", "")), None)
        self.kind = str(getattr(catalog, "kind", "catalog"))
        self.catalog = catalog
        self.fetcher = fetcher
        self.chunk_size = chunk_size

    def _count(self) -> int | None:
        total: Any = getattr(self.catalog, "total", None)
        return total if isinstance(total, int) else None

    def _rows(self) -> Iterator[Product]:
        chunk: list[Product] = []
        for product in self.catalog:
            chunk.append(product)
            if len(chunk) >= self.chunk_size:
                yield from self._resolve(chunk)
                chunk = []
        if chunk:
            yield from self._resolve(chunk)

    def _resolve(self, chunk: list[Product]) -> list[Product]:
        """The chunk with its image URLs resolved (copies; the wrapped products are unchanged)."""
        urls = [p.image_url for p in chunk if _needs_fetch(p) and p.image_url is not None]
        if not urls:
            return chunk
        results = self.fetcher.fetch_many(urls, progress=False)
        resolved: list[Product] = []
        for product in chunk:
            if _needs_fetch(product) and product.image_url is not None:
                result = results[product.image_url]
                if result.ok:
                    product = dataclasses.replace(product, image_path=result.path)
                else:
                    error = f"image {product.image_url}: {result.error}"
                    product = dataclasses.replace(product, error=error)
            resolved.append(product)
        return resolved


def _needs_fetch(product: Product) -> bool:
    return (
        product.error is None
        and product.image_url is not None
        and product.image_bytes is None
        and product.image_path is None
        and product.image_loader is None
    )
