"""The scale benchmark (``benchmarks/scale.py``) end to end on a tiny base store: it builds an
int8 store from vectors streamed chunk by chunk, measures memory, disk, latency and recall
against its exact oracle, and writes them to its JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks import scale
from clipy_qdrant.encoders.base import EncoderInfo
from clipy_qdrant.store.base import PointRecord
from clipy_qdrant.store.edge import EdgeStore

DIM = 16
KINDS = ("Shirts", "Shoes", "Watches")


def base_store(path: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(7)
    with EdgeStore(path) as store:
        store.ensure_collection(EncoderInfo("fake-16", DIM), {"articleType": "keyword"})
        store.upsert(
            [
                PointRecord(
                    f"p{i}",
                    {"text": rng.normal(size=DIM), "image": rng.normal(size=DIM)},
                    {"articleType": KINDS[i % len(KINDS)], "year": 2010 + i % 4},
                    content_hash=f"h{i}",
                )
                for i in range(n)
            ]
        )
    return path


def test_synthetic_chunks_regenerate_the_same_vectors_and_stay_unit_length() -> None:
    rng = np.random.default_rng(0)
    text, image = rng.normal(size=(5, DIM)), rng.normal(size=(5, DIM))
    first = list(scale.synthetic_chunks(scale.CHUNK + 10, text, image, 0.5, seed=3))
    again = list(scale.synthetic_chunks(scale.CHUNK + 10, text, image, 0.5, seed=3))
    assert [start for start, *_ in first] == [0, scale.CHUNK]
    assert sum(len(idx) for _, idx, _, _ in first) == scale.CHUNK + 10
    for (_, idx, t, i), (_, idx2, t2, i2) in zip(first, again, strict=True):
        assert (idx == idx2).all() and (t == t2).all() and (i == i2).all()
        np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)


def test_the_benchmark_builds_an_int8_store_and_reports_every_measure(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    code = scale.main(
        [
            "--base", str(base_store(tmp_path / "base")), "--n", "900", "--queries", "12",
            "--quantization", "int8", "--store", str(tmp_path / "s"), "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["n"] == 900 and result["dim"] == DIM and result["base_products"] == 60
    assert result["options"]["quantization"] == "int8" and result["options"]["rescore"]
    memory = result["build_memory"]
    assert 0 < memory["peak_anon_gb"] <= memory["peak_rss_gb"]
    assert result["peak_rss_after_build_mb"] > 0
    assert result["disk_bytes"]["quantized vectors"] > 0
    # Two float32 vectors of 16 dimensions per product.
    assert result["disk_bytes_per_product"]["vectors"] >= 2 * DIM * 4
    for mode in ("text", "filtered", "fused", "fused_filtered"):
        assert result[mode]["p50_ms"] <= result[mode]["p99_ms"]
        assert result[mode]["recall@10"] >= 0.9, (mode, result[mode])
    assert not (tmp_path / "s").exists()  # removed unless --keep
