"""A small real store for the HTTP API and browser tests: generated product pictures (JPEG
and PNG, a distinct colour each, with a pattern so that no two are alike), ingested by the
real pipeline with the fake encoder (its image vectors are colour histograms, so a red query
image finds the red products)."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fake_encoder import FakeEncoder
from PIL import Image, ImageDraw

from clipy_qdrant.store import VectorStore, open_store
from ingest.pipeline import run_ingest
from ingest.records import Product

COLOURS: dict[str, tuple[int, int, int]] = {
    "Red": (220, 20, 20),
    "Blue": (20, 40, 220),
    "Green": (20, 160, 40),
    "Yellow": (240, 220, 20),
    "Black": (20, 20, 20),
    "Purple": (120, 30, 160),
}
TYPES = ["Tshirts", "Shoes", "Watches", "Bags"]
GENDERS = ["Men", "Women"]
INDEXED = {
    "gender": "keyword",
    "baseColour": "keyword",
    "articleType": "keyword",
    "year": "integer",
    "productDisplayName": "text",
}


def picture(rgb: tuple[int, int, int], i: int, fmt: str) -> bytes:
    """A 60x80 catalog-like picture: a colour block on white, with a small white mark."""
    img = Image.new("RGB", (60, 80), (255, 255, 255))
    img.paste(Image.new("RGB", (44, 64), rgb), (8, 8))
    ImageDraw.Draw(img).rectangle(
        (10 + i % 30, 10 + i % 50, 14 + i % 30, 14 + i % 50), fill="white"
    )
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def products(n: int) -> list[Product]:
    out = []
    names = list(COLOURS)
    for i in range(n):
        colour = names[i % len(names)]
        kind = TYPES[(i // 12) % len(TYPES)]
        gender = GENDERS[(i // 6) % 2]
        name = f"{gender} {colour} {kind} {i}"
        out.append(
            Product(
                product_id=str(1000 + i),
                text=name,
                metadata={
                    "gender": gender,
                    "baseColour": colour,
                    "articleType": kind,
                    "year": 2010 + i % 8,
                    "productDisplayName": name,
                },
                image_bytes=picture(COLOURS[colour], i, "PNG" if i % 4 == 0 else "JPEG"),
            )
        )
    return out


def build_store(
    n: int,
    where: Path | str,
    *,
    backend: str = "edge",
    catalog: list[Product] | None = None,
    thumbnails: bool = True,
) -> VectorStore:
    """An ingested store of ``n`` products (or of ``catalog``): edge in folder ``where``, or
    qdrant-client ``:memory:``."""
    store = open_store(where) if backend == "edge" else open_store(url=":memory:")
    run_ingest(
        catalog if catalog is not None else products(n),
        store,
        FakeEncoder(),
        progress=False,
        indexed_fields=INDEXED,  # type: ignore[arg-type]
        thumbnails=thumbnails,
    )
    return store


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
