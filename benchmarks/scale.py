"""Scale benchmark: a synthetic catalog of N products in the embedded store, with quantization.

Usage (a standalone script, or ``python -m benchmarks.scale`` from the checkout):

    clipy ingest ../shared/datasets/fashion-product-images-small --limit 2000 --store base
    python benchmarks/scale.py --base base --n 100000 --quantization int8 \\
        --store /tmp/scale-100k --out bench-out/scale-100k.json

The vectors are drawn around a small real store's (``--base``, written by ``clipy ingest``
with the real encoder): each synthetic product picks a real product, adds Gaussian noise to
its text and image vectors (``--noise``: the expected norm of the noise; the vectors are
renormalised) and copies its payload. The generator is seeded per chunk, so the exact oracle
regenerates the same vectors instead of holding them in memory while the store is built.

Memory stays bounded at any N: the vectors are generated and written ``CHUNK`` products at
a time (the points of one chunk are the only Python objects), and the oracle regenerates
them chunk by chunk. The 1,000,000-product run:

    python benchmarks/scale.py --base base --n 1000000 --quantization int8 --progress \
        --store /tmp/scale-1m --out bench-out/scale-1m.json

Measured: write and HNSW build time, peak memory during the build (``ru_maxrss``, and
sampled anonymous / file-backed / locked peaks: see :class:`MemorySampler`), disk by
component (vectors, quantized vectors, HNSW links, payload, ...), and
over ``--queries`` queries (a real product's vectors plus noise): p50 / p99 latency and
recall@10 against exact search, for one channel unfiltered, one channel filtered on the
product's article type, and the two channels fused (weighted, as ``clipy search`` does).
``--copy-timing`` also times moving the built store to another folder (scroll-and-upsert
against a qdrant-edge shard snapshot).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    # Run as a script: import the checkout's packages.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHUNK = 4096
#: Store-written payload keys that a synthetic product does not copy from its base product.
_DROPPED_KEYS = ("product_id", "content_hash", "hubness")


def read_base(path: Path) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], Any, dict]:
    """Text vectors, image vectors, payloads, encoder info and payload indexes of a store."""
    from clipy_qdrant.store.edge import EdgeStore

    with EdgeStore(path) as base:
        encoder = base.encoder_info()
        if encoder is None:
            raise SystemExit(f"--base {path} has no collection; run clipy ingest into it first")
        fields = {k: v for k, v in base.indexed_fields().items() if k != "product_id"}
        texts, images, payloads = [], [], []
        for point in base.scroll(with_vectors=True):
            texts.append(point.vectors["text"])
            images.append(point.vectors["image"])
            payloads.append({k: v for k, v in point.payload.items() if k not in _DROPPED_KEYS})
    return np.stack(texts), np.stack(images), payloads, encoder, fields


#: The sampling loop of :class:`MemorySampler`, run in a child process: peaks of the watched
#: process's ``/proc/PID/status`` fields until its stdin closes, then the peaks as JSON.
_SAMPLER = """
import json, select, sys
pid, interval, keys = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
peak = dict.fromkeys(keys, 0)
while True:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in peak:
                    peak[key] = max(peak[key], int(value.split()[0]) * 1024)
    except OSError:
        break
    if select.select([sys.stdin], [], [], interval)[0] and not sys.stdin.read(1):
        break
print(json.dumps(peak))
"""


class MemorySampler:
    """Peak resident memory of this process, sampled every ``interval`` s from
    ``/proc/PID/status`` by a child process (the engine's calls hold the GIL, so a thread
    here would not run during the HNSW build): anonymous (heap: what must fit in RAM),
    file-backed (pages of the memory-mapped store files, which the kernel drops under memory
    pressure unless they are locked: ``VmLck``) and their sum. ``ru_maxrss`` is the sum's
    exact high-water mark; the sampled ones can miss a peak shorter than the interval.
    Off Linux nothing is sampled and every peak reads 0."""

    KEYS = ("VmRSS", "RssAnon", "RssFile", "VmLck")

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = dict.fromkeys(self.KEYS, 0)
        self._child: Any = None

    def __enter__(self) -> MemorySampler:
        import subprocess

        if Path(f"/proc/{os.getpid()}/status").exists():
            self._child = subprocess.Popen(
                [sys.executable, "-c", _SAMPLER, str(os.getpid()), str(self.interval), *self.KEYS],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._child is not None:
            out, _ = self._child.communicate(timeout=60)
            self.peak.update(json.loads(out))
            self._child = None

    def report(self) -> dict[str, float]:
        """Peaks in GB (10^9 B)."""
        return {
            "peak_rss_gb": round(self.peak["VmRSS"] / 1e9, 2),
            "peak_anon_gb": round(self.peak["RssAnon"] / 1e9, 2),
            "peak_file_gb": round(self.peak["RssFile"] / 1e9, 2),
            "peak_locked_gb": round(self.peak["VmLck"] / 1e9, 2),
        }


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_chunks(
    n: int, text: np.ndarray, image: np.ndarray, noise: float, seed: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """``(start, base index, text vectors, image vectors)`` per chunk of ``CHUNK`` products."""
    dim = text.shape[1]
    sigma = noise / np.sqrt(dim)
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        rng = np.random.default_rng([seed, start])
        idx = rng.integers(0, len(text), size)
        t = _unit(text[idx] + rng.normal(0, sigma, (size, dim)))
        i = _unit(image[idx] + rng.normal(0, sigma, (size, dim)))
        yield start, idx, t, i


def disk_breakdown(root: Path) -> dict[str, int]:
    """Bytes on disk (allocated blocks) under ``root`` by component of a Qdrant segment."""
    parts: dict[str, int] = {}
    for f in root.rglob("*"):
        if not f.is_file():
            continue
        rel = str(f.relative_to(root))
        if "quantized" in rel:
            key = "quantized vectors"
        elif "vector_storage" in rel:
            key = "vectors"
        elif "vector_index" in rel:
            key = "hnsw"
        elif "payload_index" in rel:
            key = "payload index"
        elif "payload_storage" in rel:
            key = "payload"
        elif "id_tracker" in rel:
            key = "id tracker"
        elif "wal" in rel.split(os.sep)[:3] or rel.startswith("shard/wal"):
            key = "wal"
        else:
            key = "other"
        parts[key] = parts.get(key, 0) + f.stat().st_blocks * 512
    return dict(sorted(parts.items()))


def time_copies(path: Path) -> dict[str, Any]:
    """Seconds to copy the (closed) embedded store at ``path`` to a new folder three ways:
    scroll-and-upsert (:func:`copy_store`, then the HNSW build the target needs), a shard
    snapshot (a tar of the shard folder, unpacked by qdrant-edge's ``unpack_snapshot``: the
    segments arrive with their HNSW graphs), and a plain folder copy. Each copy is checked
    point by point against the source afterwards (not timed)."""
    import tarfile

    import qdrant_edge as qe

    from clipy_qdrant.store.copy import copy_store
    from clipy_qdrant.store.edge import META_FILE, SHARD_DIR, EdgeStore

    work = path.parent / f"{path.name}-copies"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out: dict[str, Any] = {}

    t0 = time.perf_counter()
    with EdgeStore(path) as src, EdgeStore(work / "scroll") as dst:
        copy_store(src, dst, progress=False, verify=False, build_index=False, snapshot=False)
        out["scroll_upsert_s"] = round(time.perf_counter() - t0, 1)
        t1 = time.perf_counter()
        dst.build_index()
        out["scroll_upsert_index_s"] = round(time.perf_counter() - t1, 1)
    out["scroll_upsert_total_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    tar = work / "shard.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(path / SHARD_DIR, arcname=".")
    out["snapshot_tar_s"] = round(time.perf_counter() - t0, 1)
    out["snapshot_tar_mb"] = round(tar.stat().st_size / 1e6, 1)
    t1 = time.perf_counter()
    (work / "snapshot").mkdir()
    qe.EdgeShard.unpack_snapshot(str(tar), str(work / "snapshot" / SHARD_DIR))
    shutil.copy2(path / META_FILE, work / "snapshot" / META_FILE)
    out["snapshot_unpack_s"] = round(time.perf_counter() - t1, 1)
    out["snapshot_total_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    shutil.copytree(path, work / "folder", ignore=shutil.ignore_patterns("clipy.pid"))
    out["folder_copy_s"] = round(time.perf_counter() - t0, 1)

    with EdgeStore(path) as src:
        for name in ("scroll", "snapshot", "folder"):
            with EdgeStore(work / name) as dst:
                check = copy_store(src, dst, progress=False)
                out[f"{name}_verified"] = check.ok and check.copied == 0
                out[f"{name}_indexed_vectors"] = dst.stats()["indexed_vectors"]
    shutil.rmtree(work, ignore_errors=True)
    return out


def thumbnail_bytes(catalog: Path, n: int, size: int = 256, quality: int = 80) -> dict[str, Any]:
    """Mean bytes of a product thumbnail: the first ``n`` catalog images, shrunk to fit
    ``size`` px (never enlarged) and written as JPEG at ``quality``."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    sizes, dims = [], []
    for file in sorted(catalog.rglob("*.parquet")):
        table = pq.read_table(file, columns=["image"]).slice(0, n - len(sizes))
        for cell in table.column("image").to_pylist():
            with Image.open(io.BytesIO(cell["bytes"])) as img:
                thumb = img.convert("RGB")
                thumb.thumbnail((size, size))
                buf = io.BytesIO()
                thumb.save(buf, "JPEG", quality=quality)
            sizes.append(len(buf.getvalue()))
            dims.append(thumb.size)
        if len(sizes) >= n:
            break
    return {
        "images": len(sizes),
        "mean_bytes": round(float(np.mean(sizes)), 1),
        "max_bytes": int(max(sizes)),
        "sizes_px": sorted({f"{w}x{h}" for w, h in dims}),
    }


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="a small real clipy store")
    parser.add_argument(
        "--thumbnails",
        type=int,
        metavar="N",
        help="only measure the mean thumbnail size (<=256 px JPEG q80) of N catalog images",
    )
    parser.add_argument("--catalog", type=Path, help="catalog folder (default: CLIPY_CATALOG)")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--quantization", choices=["none", "int8", "binary"], default="int8")
    parser.add_argument("--oversampling", type=float, default=2.0)
    parser.add_argument(
        "--on-disk", action="store_true", help="original vectors memory-mapped on disk"
    )
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--hnsw-ef", type=int, default=None, help="search beam width (default: the store's)"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", type=Path, help="folder to build (replaced)")
    parser.add_argument("--keep", action="store_true", help="keep the built store")
    parser.add_argument(
        "--copy-timing",
        action="store_true",
        help="also time copying the built store: scroll-and-upsert vs shard snapshot",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/scale.json"))
    parser.add_argument("--progress", action="store_true", help="print upsert progress to stderr")
    args = parser.parse_args(argv)
    if args.thumbnails:
        from clipy_qdrant.config import get_settings

        print(json.dumps(thumbnail_bytes(args.catalog or get_settings().catalog, args.thumbnails)))
        return 0
    if args.base is None or args.store is None:
        parser.error("--base and --store are required to build a store")

    from clipy_qdrant.filters import parse_filter
    from clipy_qdrant.fusion import FusionConfig
    from clipy_qdrant.search import QueryVectors, Searcher
    from clipy_qdrant.store import PointRecord
    from clipy_qdrant.store.edge import EdgeStore
    from clipy_qdrant.store.options import CollectionOptions
    from clipy_qdrant.store.qdrant import DEFAULT_HNSW_EF

    hnsw_ef = args.hnsw_ef or DEFAULT_HNSW_EF
    base_t, base_i, payloads, encoder, fields = read_base(args.base)
    options = CollectionOptions(
        quantization=args.quantization, oversampling=args.oversampling, on_disk=args.on_disk
    )
    shutil.rmtree(args.store, ignore_errors=True)
    result: dict[str, Any] = {
        "n": args.n,
        "dim": int(base_t.shape[1]),
        "base_products": len(payloads),
        "options": options.to_json(),
        "hnsw_ef": hnsw_ef,
        "noise": args.noise,
        "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg(),
    }

    # -- build ------------------------------------------------------------------------------
    started = time.perf_counter()
    with MemorySampler() as memory, EdgeStore(args.store, options=options) as store:
        store.ensure_collection(encoder, fields)
        for start, idx, t, i in synthetic_chunks(args.n, base_t, base_i, args.noise, args.seed):
            store.upsert(
                [
                    PointRecord(
                        f"syn-{start + j}",
                        {"text": t[j], "image": i[j]},
                        payloads[int(idx[j])],
                    )
                    for j in range(len(idx))
                ]
            )
            if args.progress and (start // CHUNK) % max(1, args.n // CHUNK // 10) == 0:
                print(f"upserted {start + len(idx):,} / {args.n:,}", file=sys.stderr, flush=True)
        result["upsert_s"] = round(time.perf_counter() - started, 1)
        index_started = time.perf_counter()
        store.build_index()
        result["index_s"] = round(time.perf_counter() - index_started, 1)
    result["build_s"] = round(time.perf_counter() - started, 1)
    result["peak_rss_after_build_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    result["build_memory"] = memory.report()
    parts = disk_breakdown(args.store)
    result["disk_bytes"] = parts
    result["disk_total_mb"] = round(sum(parts.values()) / 1e6, 1)
    result["disk_bytes_per_product"] = {k: round(v / args.n, 1) for k, v in parts.items()}
    print(json.dumps(result, indent=2), file=sys.stderr)
    if args.copy_timing:
        result["copy"] = time_copies(args.store)
        print(json.dumps(result["copy"], indent=2), file=sys.stderr)

    # -- queries ----------------------------------------------------------------------------
    if args.queries > 0:
        rng = np.random.default_rng([args.seed, 2**31])
        picks = rng.integers(0, len(payloads), args.queries)
        sigma = args.noise / np.sqrt(base_t.shape[1])
        q_text = _unit(base_t[picks] + rng.normal(0, sigma, base_t[picks].shape))
        q_image = _unit(base_i[picks] + rng.normal(0, sigma, base_i[picks].shape))
        kinds = [str(payloads[int(p)].get("articleType", "")) for p in picks]
        opened = time.perf_counter()
        store = EdgeStore(args.store, hnsw_ef=hnsw_ef)
        result["reopen_s"] = round(time.perf_counter() - opened, 2)
        searcher = Searcher(store, None, hubness=0.0)
        fusion = FusionConfig(w_lexical=0)
        found: dict[str, list[list[str]]] = {m: [] for m in ("text", "filtered", "fused")}
        found["fused_filtered"] = []
        times: dict[str, list[float]] = {m: [] for m in found}
        try:
            for q in range(args.queries):
                flt = parse_filter([f"articleType={kinds[q]}"])
                vectors = QueryVectors(q_text[q], q_image[q])
                for mode in found:
                    t0 = time.perf_counter()
                    if mode == "text":
                        ids = [h.product_id for h in store.search("text", q_text[q], args.k)]
                    elif mode == "filtered":
                        ids = [h.product_id for h in store.search("text", q_text[q], args.k, flt)]
                    else:
                        hits = searcher.search_vectors(
                            vectors,
                            filters=flt if mode == "fused_filtered" else None,
                            k=args.k,
                            fusion=fusion,
                        )
                        ids = [h.product_id for h in hits]
                    times[mode].append(time.perf_counter() - t0)
                    found[mode].append(ids)
        finally:
            store.close()

        # Exact oracle over the regenerated vectors, chunk by chunk.
        k = args.k
        best = {
            m: (np.full((args.queries, k), -np.inf), np.zeros((args.queries, k), int))
            for m in found
        }
        kind_of_base = np.array([str(p.get("articleType", "")) for p in payloads])
        for start, idx, t, i in synthetic_chunks(args.n, base_t, base_i, args.noise, args.seed):
            st = q_text @ t.T
            si = q_image @ i.T
            same = kind_of_base[idx][None, :] == np.array(kinds)[:, None]
            scores = {
                "text": st,
                "filtered": np.where(same, st, -np.inf),
                "fused": 0.5 * st + 0.5 * si,
                "fused_filtered": np.where(same, 0.5 * st + 0.5 * si, -np.inf),
            }
            ids = np.arange(start, start + len(idx))
            for mode, s in scores.items():
                top_s, top_i = best[mode]
                all_s = np.concatenate([top_s, s], axis=1)
                all_i = np.concatenate([top_i, np.broadcast_to(ids, s.shape)], axis=1)
                order = np.argsort(-all_s, axis=1)[:, :k]
                best[mode] = (
                    np.take_along_axis(all_s, order, 1),
                    np.take_along_axis(all_i, order, 1),
                )
        for mode in found:
            top_s, top_i = best[mode]
            recalls = []
            for q in range(args.queries):
                truth = {f"syn-{j}" for j, s in zip(top_i[q], top_s[q], strict=True) if s > -np.inf}
                if truth:
                    recalls.append(len(truth & set(found[mode][q][:k])) / len(truth))
            result[mode] = {
                **_percentiles(times[mode]),
                f"recall@{k}": round(float(np.mean(recalls)), 4),
            }
    result["load_average_end"] = os.getloadavg()
    if not args.keep:
        shutil.rmtree(args.store, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
