"""Vector stores: :func:`open_store` picks the backend from one argument.

``base`` holds the contract and point records, ``meta`` what a store remembers, ``options``
a collection's layout (shards, quantization, storage) and its mapping to each engine, ``copy``
moving a store's points between backends without re-embedding, ``qdrant``
the flow both backends share (``convert``: records to engine payloads and vectors);
``edge`` (embedded qdrant-edge) and ``client`` (qdrant-client) hold only their engine calls
and are imported when a store is opened.
"""

from __future__ import annotations

from pathlib import Path

from clipy_qdrant.store.base import (
    CONTENT_HASH_KEY,
    HUBNESS_KEY,
    IMAGE,
    PRODUCT_ID_KEY,
    TEXT,
    THUMBNAIL_KEY,
    VECTOR_NAMES,
    FieldType,
    PointRecord,
    ScoredPoint,
    StoredPoint,
    Thumbnail,
    VectorStore,
    point_id,
)
from clipy_qdrant.store.meta import HubnessInfo, StoreMeta
from clipy_qdrant.store.options import CollectionOptions


def open_store(
    path: str | Path | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    collection: str = "products",
    options: CollectionOptions | None = None,
    hnsw_ef: int | None = None,
    search_threads: int | None = None,
) -> VectorStore:
    """Open a store: ``url`` (``http://…`` server or ``:memory:``) selects qdrant-client,
    otherwise the embedded qdrant-edge store in folder ``path`` (default ``./clipy-data``).
    ``options`` lay out a collection this store creates (see :class:`CollectionOptions`);
    ``hnsw_ef`` is the search beam width (``None``: the ``CLIPY_HNSW_EF`` setting, else
    ``DEFAULT_HNSW_EF``); ``search_threads`` sizes the embedded engine's search pool (``None``:
    the ``CLIPY_SEARCH_THREADS`` setting, else ``DEFAULT_SEARCH_THREADS``; a server sizes its
    own)."""
    from clipy_qdrant.config import get_settings
    from clipy_qdrant.store.qdrant import DEFAULT_HNSW_EF

    settings = get_settings()
    ef = hnsw_ef if hnsw_ef is not None else settings.hnsw_ef or DEFAULT_HNSW_EF
    if url:
        from clipy_qdrant.store.client import ClientStore

        return ClientStore(
            url=url, api_key=api_key, collection=collection, options=options, hnsw_ef=ef
        )
    from clipy_qdrant.store.edge import DEFAULT_SEARCH_THREADS, EdgeStore

    threads = search_threads if search_threads is not None else settings.search_threads
    threads = threads if threads is not None else DEFAULT_SEARCH_THREADS
    return EdgeStore(
        Path(path or "./clipy-data"), options=options, hnsw_ef=ef, search_threads=threads
    )


__all__ = [
    "CONTENT_HASH_KEY",
    "HUBNESS_KEY",
    "IMAGE",
    "PRODUCT_ID_KEY",
    "TEXT",
    "THUMBNAIL_KEY",
    "VECTOR_NAMES",
    "CollectionOptions",
    "FieldType",
    "HubnessInfo",
    "PointRecord",
    "ScoredPoint",
    "StoreMeta",
    "StoredPoint",
    "Thumbnail",
    "VectorStore",
    "open_store",
    "point_id",
]
