"""Test tiers and shared fixtures.

Tiers (markers, declared in pyproject): plain unit tests; ``slow`` (model loads, training);
``catalog`` (needs the fashion catalog copy, found through ``CLIPY_CATALOG``, default
``../shared/datasets/fashion-product-images-small``); ``server`` (needs a Qdrant server at
``CLIPY_TEST_QDRANT_URL``). A tier that cannot run is skipped with the reason, shown in the
summary (``-ra``), never silently.
"""

from __future__ import annotations

import os

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
