"""Builders of small real catalogs for the reliability tests: good rows plus one bad input.

Everything is generated (no committed binaries): images with PIL, catalogs as CSV, JSONL or
parquet files. :func:`ingest_into` runs the real pipeline with the fake encoder on the
embedded store, without the progress bar, hubness or HNSW (each test that needs those asks).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fake_encoder import FakeEncoder
from PIL import Image

from clipy_qdrant.store import VectorStore, open_store
from ingest.pipeline import IngestReport, run_ingest
from ingest.readers import open_catalog

#: Good products every corpus case carries beside its bad input.
GOOD = [
    {"id": f"g{i}", "productDisplayName": f"Good {c} shirt", "baseColour": c, "year": 2010 + i}
    for i, c in enumerate(["Red", "Blue", "Green", "Black"])
]
GOOD_RGB = [(220, 20, 20), (20, 40, 220), (20, 160, 40), (5, 5, 5)]


def image_bytes(
    rgb: tuple[int, int, int] = (200, 30, 30),
    fmt: str = "JPEG",
    size: tuple[int, int] = (24, 32),
    mode: str = "RGB",
    **save: Any,
) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, rgb)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def write_good_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for row, rgb in zip(GOOD, GOOD_RGB, strict=True):
        (folder / f"{row['id']}.jpg").write_bytes(image_bytes(rgb))


def write_csv(path: Path, rows: Sequence[dict[str, Any]], *, delimiter: str = ",") -> Path:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: Sequence[dict[str, Any] | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def csv_case(
    root: Path, bad_row: dict[str, Any], image: bytes | None = None, suffix: str = ".jpg"
) -> Path:
    """A CSV catalog of the good rows plus ``bad_row`` (its image, when given, in images/)."""
    write_good_images(root / "images")
    if image is not None:
        (root / "images" / f"{bad_row['id']}{suffix}").write_bytes(image)
    if suffix != ".jpg":
        bad_row = {**bad_row, "image": f"{bad_row['id']}{suffix}"}
    return write_csv(root / "styles.csv", [*GOOD[:2], bad_row, *GOOD[2:]])


def ingest_into(
    store_path: Path, source: str | Path, encoder: Any = None, **catalog_args: Any
) -> tuple[IngestReport, VectorStore]:
    """Ingest ``source`` into the embedded store at ``store_path``; the caller closes it."""
    catalog = open_catalog(source, **catalog_args)
    store = open_store(store_path)
    try:
        report = run_ingest(
            catalog,
            store,
            encoder or FakeEncoder(),
            batch_size=3,
            progress=False,
            hubness=False,
            build_index=False,
            thumbnails=False,
        )
    except BaseException:
        store.close()
        raise
    return report, store


class LayoutEncoder(FakeEncoder):
    """The fake encoder with an image vector that sees layout: the 4×4 RGB thumbnail, so a
    rotated picture gets another vector (the colour histogram cannot tell)."""

    def __init__(self) -> None:
        super().__init__(48)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        rows = [
            np.asarray(img.convert("RGB").resize((4, 4), Image.Resampling.BOX), np.float32).ravel()
            for img in images
        ]
        out = np.stack(rows) if rows else np.zeros((0, 48), np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def stored_ids(store: VectorStore) -> set[str]:
    return {p.product_id for p in store.scroll()}
