"""BatchingEncoder: concurrent text encodes coalesced into batches of the wrapped encoder (one
batch at a time), the rows each caller gets equal to its own single encode, errors handed to
every caller of the failed batch, and the LRU cache of query embeddings."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fake_encoder import FakeEncoder
from PIL import Image

from clipy_qdrant.encoders.base import Encoder, EncoderInfo
from clipy_qdrant.encoders.batching import BatchingEncoder
from clipy_qdrant.errors import ConfigError, EncoderError

TEXTS = [f"{colour} {item}" for colour in ("red", "blue", "green") for item in ("shoes", "bag")]


class Recording:
    """FakeEncoder's vectors, recording every ``encode_texts`` call, whether two ever ran at
    once, and optionally holding the first call until ``release`` is set."""

    def __init__(self, *, hold_first: bool = False, fail_on: str | None = None) -> None:
        self.inner = FakeEncoder()
        self.default_hubness = 0.0
        self.trained_split = None
        self.calls: list[list[str]] = []
        self.running = 0
        self.overlapped = False
        self.release = threading.Event()
        self.hold_first = hold_first
        self.fail_on = fail_on
        self._lock = threading.Lock()

    @property
    def info(self) -> EncoderInfo:
        return self.inner.info

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        return self.inner.encode_images(images, batch_size)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.overlapped |= self.running > 1
            first = not self.calls
            self.calls.append(list(texts))
        try:
            if first and self.hold_first:
                assert self.release.wait(30)
            time.sleep(0.002)
            if self.fail_on is not None and self.fail_on in texts:
                raise EncoderError(f"cannot encode {self.fail_on!r}")
            return self.inner.encode_texts(texts, batch_size)
        finally:
            with self._lock:
                self.running -= 1


def _wait_for(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_it_is_an_encoder_with_the_wrapped_info_and_images() -> None:
    fake = FakeEncoder()
    batching = BatchingEncoder(fake)
    assert isinstance(batching, Encoder)
    assert batching.info == fake.info
    assert batching.default_hubness == fake.default_hubness
    image = Image.new("RGB", (20, 20), (200, 10, 10))
    np.testing.assert_array_equal(batching.encode_images([image]), fake.encode_images([image]))
    assert batching.encode_texts([]).shape == (0, fake.info.dim)
    with pytest.raises(EncoderError, match="list of strings"):
        batching.encode_texts("red shoes")
    with pytest.raises(ConfigError, match="max_batch"):
        BatchingEncoder(fake, max_batch=0)
    with pytest.raises(ConfigError, match="cache_size"):
        BatchingEncoder(fake, cache_size=-1)


def test_a_lone_call_is_encoded_at_once_as_given() -> None:
    inner = Recording()
    batching = BatchingEncoder(inner)
    rows = batching.encode_texts(TEXTS)
    np.testing.assert_array_equal(rows, FakeEncoder().encode_texts(TEXTS))
    assert inner.calls == [TEXTS]


def test_concurrent_calls_are_coalesced_one_batch_at_a_time() -> None:
    inner = Recording(hold_first=True)
    batching = BatchingEncoder(inner)
    fake = FakeEncoder()
    queries = [[t] for t in TEXTS] + [["red shoes", "navy bag"], ["red shoes"], ["grey socks"]]
    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        first = pool.submit(batching.encode_texts, queries[0])
        _wait_for(lambda: len(inner.calls) == 1)  # the first call runs, alone, and holds
        rest = [pool.submit(batching.encode_texts, q) for q in queries[1:]]
        _wait_for(lambda: batching.stats.calls == len(queries))  # every other call queued
        inner.release.set()
        results = [first.result(), *(f.result() for f in rest)]
    for query, rows in zip(queries, results, strict=True):
        np.testing.assert_array_equal(rows, fake.encode_texts(query))
    assert not inner.overlapped
    # The queued calls ran as one batch, each distinct text once.
    assert len(inner.calls) == 2
    assert sorted(inner.calls[1]) == sorted({t for q in queries[1:] for t in q})
    assert batching.stats.batches == 2 and batching.stats.largest_batch == len(inner.calls[1])


def test_batches_stop_at_max_batch_distinct_texts() -> None:
    inner = Recording(hold_first=True)
    batching = BatchingEncoder(inner, max_batch=4)
    queries = [[f"text {i}"] for i in range(11)]
    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        first = pool.submit(batching.encode_texts, queries[0])
        _wait_for(lambda: len(inner.calls) == 1)
        rest = [pool.submit(batching.encode_texts, q) for q in queries[1:]]
        _wait_for(lambda: batching.stats.calls == len(queries))
        inner.release.set()
        for future in [first, *rest]:
            assert future.result().shape == (1, 32)
    assert [len(c) for c in inner.calls] == [1, 4, 4, 2]
    assert sorted(t for c in inner.calls for t in c) == sorted(q[0] for q in queries)


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_runs() -> None:
    inner = Recording(hold_first=True, fail_on="bad text")
    batching = BatchingEncoder(inner)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(batching.encode_texts, ["red shoes"])
        _wait_for(lambda: len(inner.calls) == 1)
        failing = [pool.submit(batching.encode_texts, q) for q in (["bad text"], ["blue bag"])]
        _wait_for(lambda: batching.stats.calls == 3)
        inner.release.set()
        assert first.result().shape == (1, 32)
        for future in failing:  # one batch: both of its callers get the error
            with pytest.raises(EncoderError, match="bad text"):
                future.result()
    np.testing.assert_array_equal(
        batching.encode_texts(["blue bag"]), FakeEncoder().encode_texts(["blue bag"])
    )


def test_many_threads_get_their_own_rows() -> None:
    batching = BatchingEncoder(FakeEncoder(), max_batch=8)
    fake = FakeEncoder()
    queries = [[f"{TEXTS[i % len(TEXTS)]} {i % 7}"] * (1 + i % 3) for i in range(200)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(batching.encode_texts, queries))
    for query, rows in zip(queries, results, strict=True):
        np.testing.assert_array_equal(rows, fake.encode_texts(query))


def test_the_cache_serves_recent_texts_and_forgets_the_least_recently_used() -> None:
    inner = Recording()
    batching = BatchingEncoder(inner, cache_size=2)
    fake = FakeEncoder()
    batching.encode_texts(["red shoes", "blue bag"])
    again = batching.encode_texts(["blue bag", "red shoes"])
    np.testing.assert_array_equal(again, fake.encode_texts(["blue bag", "red shoes"]))
    assert len(inner.calls) == 1 and batching.stats.cache_hits == 2
    batching.encode_texts(["green kurta", "red shoes"])  # only "green kurta" is encoded
    assert inner.calls[-1] == ["green kurta"]
    batching.encode_texts(["blue bag"])  # dropped: the least recently used of three
    assert inner.calls[-1] == ["blue bag"]
    rows = batching.encode_texts(["blue bag"])
    rows[0, 0] = 99.0  # a caller's rows are its own: the cached row is unchanged
    np.testing.assert_array_equal(
        batching.encode_texts(["blue bag"]), fake.encode_texts(["blue bag"])
    )


def test_without_a_cache_every_call_is_encoded() -> None:
    inner = Recording()
    batching = BatchingEncoder(inner)
    batching.encode_texts(["red shoes"])
    batching.encode_texts(["red shoes"])
    assert len(inner.calls) == 2 and batching.stats.cache_hits == 0


@pytest.mark.slow
def test_fashion_mini_batched_rows_equal_single_encodes_to_rounding() -> None:
    from clipy_qdrant.encoders.fashion import load_fashion_encoder

    encoder = load_fashion_encoder(None)
    batching = BatchingEncoder(encoder)
    texts = [
        "men blue casual shoes",
        "Puma Men Black Running Shoes",
        "titan watch",
        "a",
        "Lotto Men White Sports Shoes with a long name for padding",
    ]
    single = np.stack([encoder.encode_texts([t])[0] for t in texts])
    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        rows = np.concatenate(list(pool.map(lambda t: batching.encode_texts([t]), texts * 4)))
    np.testing.assert_allclose(rows, np.tile(single, (4, 1)), atol=1e-6, rtol=0)
