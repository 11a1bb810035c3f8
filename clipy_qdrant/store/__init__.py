"""Vector stores: :func:`open_store` picks the backend from one argument.

``base`` holds the contract and point records, ``meta`` what a store remembers, ``qdrant``
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


def open_store(
    path: str | Path | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    collection: str = "products",
) -> VectorStore:
    """Open a store: ``url`` (``http://…`` server or ``:memory:``) selects qdrant-client,
    otherwise the embedded qdrant-edge store in folder ``path`` (default ``./clipy-data``)."""
    if url:
        from clipy_qdrant.store.client import ClientStore

        return ClientStore(url=url, api_key=api_key, collection=collection)
    from clipy_qdrant.store.edge import EdgeStore

    return EdgeStore(Path(path or "./clipy-data"))


__all__ = [
    "CONTENT_HASH_KEY",
    "HUBNESS_KEY",
    "IMAGE",
    "PRODUCT_ID_KEY",
    "TEXT",
    "THUMBNAIL_KEY",
    "VECTOR_NAMES",
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
