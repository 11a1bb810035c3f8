"""Test tiers and shared fixtures.

Tiers (markers, declared in pyproject): plain unit tests; ``slow`` (model loads, training);
``catalog`` (needs the fashion catalog copy, found through ``CLIPY_CATALOG``, default
``../shared/datasets/fashion-product-images-small``); ``server`` (needs a Qdrant server at
``CLIPY_TEST_QDRANT_URL``). A tier that cannot run is skipped with the reason, shown in the
summary (``-ra``), never silently.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Nothing in the test suite may reach the model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from clipy_qdrant.config import Settings


def _catalog_parquet_present() -> bool:
    catalog = Settings().catalog
    return catalog.is_dir() and any(catalog.rglob("*.parquet"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = Settings()
    skip_catalog = pytest.mark.skip(
        reason=f"catalog tier: no catalog at {settings.catalog} (set CLIPY_CATALOG to its folder)"
    )
    skip_server = pytest.mark.skip(
        reason="server tier: set CLIPY_TEST_QDRANT_URL (e.g. http://localhost:6333 from docker-compose) to run it"
    )
    has_catalog = _catalog_parquet_present()
    for item in items:
        if "catalog" in item.keywords and not has_catalog:
            item.add_marker(skip_catalog)
        if "server" in item.keywords and not settings.test_qdrant_url:
            item.add_marker(skip_server)


# -- the catalog tier's shared store ------------------------------------------------------
#
# One full-catalog ingest per test session, done the hard way so that it also proves
# resumability (issue #2, acceptance 4): the first run is killed (SIGKILL) part-way, the
# second run finishes it, the third stores nothing. The store is then shared, read-only, by
# the catalog tests (HNSW recall, evaluation).

KILL_AT = 0.3  # share of the catalog's rows seen before the first run is killed


@dataclass
class CatalogStore:
    path: Path
    stored_before_kill: int
    resumed: dict
    rerun: dict
    total_rows: int


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ingest.cli", *args]


def _run_until(args: list[str], stored_at_least: int) -> int:
    """Run an ingest, SIGKILL it once the progress bar shows ``stored_at_least`` products."""
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    buffer = b""
    seen = 0
    progress = re.compile(rb"(\d+)/(\d+)")
    while True:
        chunk = proc.stderr.read1(4096)  # type: ignore[attr-defined]
        if not chunk:
            break
        buffer = (buffer + chunk)[-4096:]
        counts = progress.findall(buffer)
        if counts:
            seen = int(counts[-1][0])
        if seen >= stored_at_least:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    return seen


@pytest.fixture(scope="session")
def catalog_store(tmp_path_factory: pytest.TempPathFactory) -> CatalogStore:
    settings = Settings()
    if not _catalog_parquet_present():
        pytest.skip(f"catalog tier: no catalog at {settings.catalog}")
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in settings.catalog.rglob("*.parquet"))
    root = tmp_path_factory.mktemp("catalog-store")
    path = root / "store"
    common = ["ingest", str(settings.catalog), "--store", str(path)]
    first = _cli(*common, "--no-index", "--report", str(root / "r1.json"))
    seen = _run_until(first, int(rows * KILL_AT))
    subprocess.run(_cli(*common, "--report", str(root / "r2.json")), check=True)
    subprocess.run(_cli(*common, "--report", str(root / "r3.json")), check=True)
    resumed = json.loads((root / "r2.json").read_text())
    rerun = json.loads((root / "r3.json").read_text())
    return CatalogStore(path, seen, resumed, rerun, rows)
