"""BLAS threads for small batches: one query's head arithmetic runs on one thread.

numpy's BLAS (OpenBLAS) splits even a one-row matrix product across its threads. For a
query (a batch of one or a few rows) the products take microseconds, and waking the parked
BLAS threads costs more than the work: milliseconds on a busy CPU. :func:`blas_threads_for`
caps BLAS at one thread while a small batch runs (the results are the same to float
rounding: some CPUs' kernels sum a product in another order on two threads) and leaves large
batches alone.

The cap is process-wide while it holds (BLAS has one thread setting), so a large batch that
runs at the same moment in another thread runs single-threaded for that long.

A server answers many small queries at once and runs no large batch: :func:`one_blas_thread`
caps BLAS at one thread for the rest of the process. OpenBLAS's worker threads busy-wait for
new work after every multi-threaded product; under a server's stream of small products one
of them spins for about a quarter of the process's CPU time (measured under ``clipy serve``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

#: Batches of at most this many rows run their BLAS products on one thread.
SMALL_BATCH_ROWS = 16

_controller: Any = None
_lock = threading.Lock()
#: Blocks inside :func:`blas_threads_for` that hold the cap now, and the limiter that
#: restores the thread counts when the last of them leaves.
_holders = 0
_limiter: Any = None
#: The process-wide cap of :func:`one_blas_thread` (kept so that it is never restored).
_process_cap: Any = None


def _blas_controller() -> Any:
    """threadpoolctl's controller of the loaded BLAS libraries (made once, under ``_lock``),
    or False when threadpoolctl is not installed."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controller = False
        else:
            _controller = ThreadpoolController().select(user_api="blas")
    return _controller


@contextlib.contextmanager
def blas_threads_for(rows: int) -> Iterator[None]:
    """One BLAS thread inside the block when ``rows`` is at most :data:`SMALL_BATCH_ROWS`.

    Blocks may overlap (concurrent queries in a server's threads): the first one in caps the
    threads, the last one out restores the counts the first one found.
    """
    global _holders, _limiter
    if rows > SMALL_BATCH_ROWS:
        yield
        return
    with _lock:
        controller = _blas_controller()
        if not controller:
            capped = False
        else:
            capped = True
            if _holders == 0:
                _limiter = controller.limit(limits=1)
            _holders += 1
    try:
        yield
    finally:
        if capped:
            with _lock:
                _holders -= 1
                if _holders == 0:
                    _limiter.restore_original_limits()
                    _limiter = None


def one_blas_thread() -> bool:
    """Cap the loaded BLAS libraries at one thread for the rest of the process (for a server;
    the results are the same to float rounding). False when threadpoolctl is not installed."""
    global _process_cap
    with _lock:
        controller = _blas_controller()
        if not controller:
            return False
        if _process_cap is None:
            _process_cap = controller.limit(limits=1)
        return True
