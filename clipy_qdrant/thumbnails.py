"""Product thumbnails: the picture a result page shows, kept with the vector store so that a
store can be served without the catalog it was ingested from.

A thumbnail is the product image scaled to at most :data:`MAX_SIDE` pixels on its longest
side and encoded as JPEG (quality :data:`JPEG_QUALITY`). Ingest makes one per stored product
whose metadata has no image URL (a URL is shown as is, see :func:`image_url_of`).

Where they live:

- embedded store: one SQLite file ``<store>/thumbnails.sqlite`` (:class:`ThumbnailDB`), a
  row per product keyed by product id, with the content hash of the product it was made from.
  A batch is one transaction, so a killed ingest leaves whole batches; a row whose hash is
  unchanged is not rewritten. One file rather than a file per product: a 2,000-product store
  is one file instead of 2,000 small ones (each rounded up to a 4 KiB block).
- qdrant-client store (server): base64 in the payload key ``thumbnail`` (never indexed, and
  left out of the payloads that searches return). Base64 adds a third to the JPEG's bytes.
"""

from __future__ import annotations

import base64
import io
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from clipy_qdrant.errors import StoreError
from clipy_qdrant.store.base import Thumbnail

#: Longest side of a thumbnail, in pixels.
MAX_SIDE = 256
JPEG_QUALITY = 80
MEDIA_TYPE = "image/jpeg"

#: Payload keys whose value, when an ``http(s)://`` string, is the product's image URL.
IMAGE_URL_KEYS: tuple[str, ...] = ("image_url", "imageUrl", "image_link", "link")


def make_thumbnail(image: Image.Image, content_hash: str = "") -> Thumbnail:
    """The JPEG thumbnail of an image (RGB, longest side at most :data:`MAX_SIDE`)."""
    small = image.convert("RGB")
    if max(small.size) > MAX_SIDE:
        small = small.copy()
        small.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return Thumbnail(buffer.getvalue(), MEDIA_TYPE, content_hash)


def image_url_of(payload: Mapping[str, Any]) -> str | None:
    """The product's image URL from its metadata, if it has one."""
    for key in IMAGE_URL_KEYS:
        value = payload.get(key)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return value
    return None


def to_payload(thumbnail: Thumbnail) -> dict[str, str]:
    """The payload value of a thumbnail on a qdrant-client store."""
    return {
        "data": base64.b64encode(thumbnail.data).decode("ascii"),
        "media_type": thumbnail.media_type,
        "content_hash": thumbnail.content_hash,
    }


def from_payload(value: Any) -> Thumbnail | None:
    """The thumbnail stored by :func:`to_payload` (``None`` if absent or malformed)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("data"), str):
        return None
    return Thumbnail(
        base64.b64decode(value["data"]),
        str(value.get("media_type") or MEDIA_TYPE),
        str(value.get("content_hash") or ""),
    )


class ThumbnailDB:
    """Thumbnails in one SQLite file; safe to share between threads (one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS thumbnails (product_id TEXT PRIMARY KEY, "
                "content_hash TEXT NOT NULL, media_type TEXT NOT NULL, data BLOB NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StoreError(f"thumbnails {path} cannot be opened: {exc}") from None

    def put(self, thumbnails: Mapping[str, Thumbnail]) -> None:
        """Write the thumbnails in one transaction; rows with the same content hash stay."""
        rows = [(str(pid), t.content_hash, t.media_type, t.data) for pid, t in thumbnails.items()]
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO thumbnails VALUES (?, ?, ?, ?) ON CONFLICT(product_id) DO UPDATE "
                    "SET content_hash = excluded.content_hash, media_type = excluded.media_type, "
                    "data = excluded.data WHERE content_hash != excluded.content_hash",
                    rows,
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"thumbnails {self.path}: write failed: {exc}") from None

    def get(self, product_id: str) -> Thumbnail | None:
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT data, media_type, content_hash FROM thumbnails WHERE product_id = ?",
                    (str(product_id),),
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"thumbnails {self.path}: read failed: {exc}") from None
        return None if row is None else Thumbnail(bytes(row[0]), str(row[1]), str(row[2]))

    def backup_to(self, path: Path) -> None:
        """Copy the database into the new file ``path`` with SQLite's online backup: a
        consistent copy while this connection stays open."""
        with self._lock:
            try:
                target = sqlite3.connect(str(path))
                try:
                    self._db.backup(target)
                finally:
                    target.close()
            except sqlite3.Error as exc:
                raise StoreError(f"thumbnails {self.path}: copy to {path} failed: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
