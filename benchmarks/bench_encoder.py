"""Speed of the fashion-mini encoder on this CPU: images/s end to end (JPEG decode included)
through ONNX Runtime and through torch, texts/s batched, and single-query latency.

    python benchmarks/bench_encoder.py [--catalog PATH] [--images 2000] [--torch-images 256]
        [--json bench_encoder.json]

Prints a table on stdout and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from PIL import Image


def _catalog_rows(catalog: Path, n: int) -> tuple[list[bytes], list[str]]:
    import pyarrow.parquet as pq

    files = sorted(catalog.rglob("*.parquet")) if catalog.is_dir() else [catalog]
    table = pq.read_table(files[0], columns=["image", "productDisplayName"]).slice(0, n)
    images = [row["bytes"] for row in table.column("image").to_pylist()]
    names = [str(name) for name in table.column("productDisplayName").to_pylist()]
    return images, names


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.convert("RGB")


def bench_images(encoder, blobs: list[bytes], batch_size: int) -> dict[str, float]:
    """End to end: bytes -> decode -> preprocess + colour -> backbone -> head."""
    encoder.encode_images([_decode(b) for b in blobs[:batch_size]], batch_size)  # warm-up
    start = time.perf_counter()
    decode_s = 0.0
    for s in range(0, len(blobs), batch_size):
        t0 = time.perf_counter()
        images = [_decode(b) for b in blobs[s : s + batch_size]]
        decode_s += time.perf_counter() - t0
        encoder.encode_images(images, batch_size)
    total = time.perf_counter() - start
    return {
        "images": len(blobs),
        "seconds": total,
        "images_per_s": len(blobs) / total,
        "decode_share": decode_s / total,
    }


def bench_colour(blobs: list[bytes]) -> float:
    """Milliseconds per image of the colour descriptor alone (decoded images, one thread)."""
    from clipy_qdrant.encoders.fashion.colour import colour_descriptor

    images = [_decode(b) for b in blobs]
    colour_descriptor(images[0])
    start = time.perf_counter()
    for image in images:
        colour_descriptor(image)
    return (time.perf_counter() - start) / len(images) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, default=None)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--torch-images", type=int, default=256)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--json", type=Path, default=Path("bench-out/encoder.json"))
    args = parser.parse_args()
    from clipy_qdrant.config import Settings, apply_offline_environment

    apply_offline_environment()
    from clipy_qdrant.encoders.fashion import load_fashion_encoder

    catalog = args.catalog or Settings().catalog
    blobs, names = _catalog_rows(catalog, max(args.images, args.texts))
    results: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "load_avg_start": os.getloadavg()[0],
    }
    onnx = load_fashion_encoder(args.model, image_runtime="onnx")
    results["onnx"] = bench_images(onnx, blobs[: args.images], args.batch_size)
    results["colour_descriptor_ms"] = bench_colour(blobs[: min(args.images, 500)])
    torch_enc = load_fashion_encoder(args.model, image_runtime="torch")
    results["torch"] = bench_images(torch_enc, blobs[: args.torch_images], args.batch_size)

    texts = names[: args.texts]
    onnx.encode_texts(texts[:64])
    start = time.perf_counter()
    onnx.encode_texts(texts, batch_size=64)
    text_s = time.perf_counter() - start
    results["texts"] = {
        "texts": len(texts),
        "texts_per_s": len(texts) / text_s,
        "runtime": onnx.text_tower.runtime,
    }
    latencies = []
    for query in ["red dress", "men's black leather shoes", "Puma Men Grey T-shirt"] * 34:
        t0 = time.perf_counter()
        onnx.encode_texts([query])
        latencies.append((time.perf_counter() - t0) * 1000)
    results["single_query_ms"] = {
        "median": statistics.median(latencies),
        "p90": sorted(latencies)[int(0.9 * len(latencies))],
    }
    results["load_avg_end"] = os.getloadavg()[0]
    results["model"] = {
        "backbone": onnx.backbone,
        "resolution": onnx.resolution,
        "dim": onnx.info.dim,
    }

    rows = [
        ("images/s end to end, ONNX Runtime", f"{results['onnx']['images_per_s']:.1f}"),  # type: ignore[index]
        ("images/s end to end, torch", f"{results['torch']['images_per_s']:.1f}"),  # type: ignore[index]
        ("colour descriptor ms per image", f"{results['colour_descriptor_ms']:.2f}"),
        ("text runtime", str(results["texts"]["runtime"])),  # type: ignore[index]
        ("texts/s batched (64)", f"{results['texts']['texts_per_s']:.1f}"),  # type: ignore[index]
        ("single query ms (median)", f"{results['single_query_ms']['median']:.2f}"),  # type: ignore[index]
        ("single query ms (p90)", f"{results['single_query_ms']['p90']:.2f}"),  # type: ignore[index]
        (
            "load average at start / end",
            f"{results['load_avg_start']:.2f} / {results['load_avg_end']:.2f}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"fashion-mini {onnx.backbone}@{onnx.resolution}, dim {onnx.info.dim}")
    for label, value in rows:
        print(f"{label:<{width}}  {value:>12}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
