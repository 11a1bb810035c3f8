"""Query-time text encoding for many threads: concurrent calls coalesced into one batch, and
an optional LRU cache of query embeddings.

A server answers queries in a thread pool. Encoding each query text on its own thread runs
several small ONNX sessions and BLAS head products at once on a few cores, and they contend
(thread pools oversubscribed, the process-wide BLAS thread cap toggled by every call). One
batch of eight short texts costs about as much as two single texts. :class:`BatchingEncoder`
therefore runs one text batch at a time: a call that arrives while a batch is running waits,
and when the batch finishes, one waiting thread encodes everything queued since, as one
batch, for all of them ("group commit"). There is no timer: a lone query is encoded at once,
and under load the batches grow by themselves, up to ``max_batch`` texts.

A batch gives the same vectors as single encodes up to float rounding (the padded batch runs
other kernel shapes: differences of about 1e-7, far below any score difference that orders
results). Identical texts in one batch are encoded once.

Query texts (``encode_queries``, the wrapped encoder's query path where it has one) and
product texts (``encode_texts``) are batched apart and cached apart.

The cache maps ``(encoder name, query or not, text)`` to its vector, for the ``cache_size``
most recently used texts (0: no cache). The encoder name carries the model's fingerprint, so
a cache never serves another model's vectors.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from clipy_qdrant.encoders.base import Encoder, EncoderInfo, encode_queries
from clipy_qdrant.errors import ConfigError, EncoderError

#: Texts per coalesced batch (the texts queued beyond it wait for the next batch).
DEFAULT_MAX_BATCH = 64


@dataclass
class _Request:
    """One caller's texts, waiting for their rows."""

    texts: list[str]
    query: bool
    rows: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class BatchStats:
    """What the coalescing did: calls, batches run and texts encoded (after de-duplication
    and cache hits), and the cache's hits."""

    calls: int = 0
    batches: int = 0
    texts_encoded: int = 0
    cache_hits: int = 0
    largest_batch: int = 0


class BatchingEncoder:
    """An :class:`~clipy_qdrant.encoders.base.Encoder` whose concurrent ``encode_texts`` calls
    run as one batch of the wrapped encoder (see the module docstring); ``encode_images`` is
    the wrapped encoder's. Thread-safe; the wrapped encoder is called by one thread at a
    time for texts."""

    def __init__(
        self, encoder: Encoder, *, max_batch: int = DEFAULT_MAX_BATCH, cache_size: int = 0
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1 (got {max_batch})")
        if cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0 (got {cache_size})")
        self.encoder = encoder
        self.max_batch = max_batch
        self.cache_size = cache_size
        self.default_hubness = encoder.default_hubness
        self.trained_split = encoder.trained_split
        self.stats = BatchStats()
        self._name = encoder.info.name
        self._cache: OrderedDict[tuple[str, bool, str], np.ndarray] = OrderedDict()
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._busy = False

    @property
    def info(self) -> EncoderInfo:
        return self.encoder.info

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        return self.encoder.encode_images(images, batch_size)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 unit rows for ``texts``, encoded in one batch with the texts of
        concurrent calls. ``batch_size`` is ignored: batches are up to ``max_batch`` texts."""
        return self._encode(texts, query=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """As :meth:`encode_texts`, for query texts: the wrapped encoder's query path
        (:func:`~clipy_qdrant.encoders.base.encode_queries`)."""
        return self._encode(texts, query=True)

    def _encode(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if isinstance(texts, str):
            raise EncoderError("encode_texts expects a list of strings, not one string")
        request = _Request([str(t) for t in texts], query)
        if not request.texts:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        with self._cond:
            self.stats.calls += 1
            cached = self._from_cache(request.texts, query)
            if cached is not None:
                return cached
            self._queue.append(request)
            while not request.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                batch = self._take()
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        assert request.rows is not None
        return request.rows

    def _from_cache(self, texts: list[str], query: bool) -> np.ndarray | None:
        """Every text's cached row (marked recently used), or ``None`` when one is missing;
        called under the lock."""
        if not self.cache_size:
            return None
        keys = [(self._name, query, t) for t in texts]
        if not all(key in self._cache for key in keys):
            return None
        for key in keys:
            self._cache.move_to_end(key)
        self.stats.cache_hits += len(keys)
        return np.stack([self._cache[key] for key in keys])

    def _take(self) -> list[_Request]:
        """The queued requests of the next batch, oldest first, up to ``max_batch`` distinct
        texts (at least one request, however many texts it has), all of the oldest request's
        kind (query or product texts); called under the lock."""
        batch: list[_Request] = []
        distinct: set[str] = set()
        query = self._queue[0].query
        for request in self._queue:
            if request.query != query:
                continue
            grown = distinct.union(request.texts)
            if batch and len(grown) > self.max_batch:
                break
            batch.append(request)
            distinct = grown
        taken = {id(request) for request in batch}
        self._queue = [request for request in self._queue if id(request) not in taken]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        """Encode the batch's distinct texts (those not cached) in one call and hand every
        request its rows; an error goes to every request of the batch."""
        texts = list(dict.fromkeys(t for request in batch for t in request.texts))
        query = batch[0].query
        try:
            with self._cond:
                known = {t: row for t in texts if (row := self._cached(t, query)) is not None}
            todo = [t for t in texts if t not in known]
            encode = (
                (lambda t: encode_queries(self.encoder, t)) if query else self.encoder.encode_texts
            )
            vectors = encode(todo) if todo else None
            rows = dict(known)
            if vectors is not None:
                rows.update(zip(todo, vectors, strict=True))
        except BaseException as exc:  # handed to every caller of the batch
            with self._cond:
                for request in batch:
                    request.error, request.done = exc, True
            return
        with self._cond:
            self.stats.batches += 1
            self.stats.texts_encoded += len(todo)
            self.stats.cache_hits += len(known)
            self.stats.largest_batch = max(self.stats.largest_batch, len(todo))
            for text in todo:
                self._remember(text, query, rows[text])
            for request in batch:
                request.rows = np.stack([rows[t] for t in request.texts])
                request.done = True

    def _cached(self, text: str, query: bool) -> np.ndarray | None:
        """The cached row of ``text`` (marked recently used), or ``None``; called under the
        lock."""
        key = (self._name, query, text)
        row = self._cache.get(key)
        if row is not None:
            self._cache.move_to_end(key)
        return row

    def _remember(self, text: str, query: bool, row: np.ndarray) -> None:
        """Cache ``row`` for ``text``, dropping the least recently used beyond the size;
        called under the lock."""
        if not self.cache_size:
            return
        key = (self._name, query, text)
        self._cache[key] = row.copy()  # not a view of the whole batch
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
