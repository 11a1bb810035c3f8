"""Load test of a running ``clipy serve``: concurrent clients send a mix of text, image,
filtered and more-like-this queries for a fixed time, then a table of throughput, errors
and p50/p99 latency per query kind is printed and written as JSON.

Standalone (standard library, plus Pillow when the server's pictures are not local) and
bounded: it stops after ``--seconds`` (at most 600) and talks to a loopback address only.

    python benchmarks/load.py --url http://127.0.0.1:8000 --clients 8 --seconds 30

A server that asks for a key (``CLIPY_SERVE_API_KEY``) gets it from the same variable.
"""

from __future__ import annotations

import argparse
import base64
import io
import ipaddress
import json
import os
import random
import socket
import statistics
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

KINDS = ("text", "image", "filtered", "like")
TEXTS = [
    "red shirt",
    "black shoes",
    "women watch",
    "blue jeans",
    "summer dress",
    "sports shoes",
    "leather bag",
    "white tshirt",
    "green kurta",
    "men sunglasses",
]
MAX_SECONDS = 600
MAX_CLIENTS = 64


class Client:
    def __init__(self, base: str, key: str | None, timeout: float = 60.0) -> None:
        self.base = base.rstrip("/")
        self.headers = {"X-API-Key": key} if key else {}
        self.timeout = timeout

    def call(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        status, data = self.call(path, body)
        if status != 200:
            raise SystemExit(f"load: {path} answered {status}: {data[:300]!r}")
        return json.loads(data)


def check_loopback(url: str) -> None:
    host = urllib.parse.urlparse(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        raise SystemExit(f"load: cannot resolve {host!r}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(
            f"load: {url} is not a loopback address; this tool only loads a local server"
        )


def solid_jpeg(rgb: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (60, 80), rgb).save(buffer, format="JPEG")
    return buffer.getvalue()


def prepare(client: Client, rng: random.Random) -> dict[str, list[Any]]:
    """Product ids, query images and filters taken from the server itself."""
    info = client.json("/v1/info")
    if not info["products"]:
        raise SystemExit("load: the server's store is empty")
    ids: list[str] = []
    for text in TEXTS:
        ids += [h["product_id"] for h in client.json("/v1/search", {"text": text, "k": 20})["hits"]]
    images: list[str] = []
    for pid in rng.sample(ids, min(8, len(ids))):
        status, data = client.call(f"/v1/products/{urllib.parse.quote(pid)}/image")
        if status == 200:  # a redirect to a remote URL is not followed off this machine
            images.append(base64.b64encode(data).decode("ascii"))
    if not images:
        images = [
            base64.b64encode(solid_jpeg(rgb)).decode("ascii")
            for rgb in ((200, 30, 30), (30, 30, 200), (20, 20, 20))
        ]
    facets = client.json("/v1/facets?limit=5")["facets"]
    filters = [
        f"{field}={value['value']}" for field, values in facets.items() for value in values[:3]
    ]
    return {"ids": ids, "images": images, "filters": filters or ["year>=0"]}


def query(kind: str, pool: dict[str, list[Any]], rng: random.Random) -> dict[str, Any]:
    if kind == "text":
        return {"text": rng.choice(TEXTS), "k": 24}
    if kind == "image":
        return {"image": rng.choice(pool["images"]), "k": 24}
    if kind == "filtered":
        return {"text": rng.choice(TEXTS), "filters": [rng.choice(pool["filters"])], "k": 24}
    return {"like": rng.choice(pool["ids"]), "k": 24}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    check_loopback(args.url)
    client = Client(args.url, os.environ.get("CLIPY_SERVE_API_KEY"))
    pool = prepare(client, random.Random(args.seed))
    latencies: dict[str, list[float]] = {k: [] for k in KINDS}
    errors: dict[str, int] = dict.fromkeys(KINDS, 0)
    samples: dict[str, str] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def worker(number: int) -> None:
        rng = random.Random(args.seed + number)
        i = number
        while time.monotonic() < deadline:
            kind = KINDS[i % len(KINDS)]
            i += 1
            start = time.perf_counter()
            try:
                status, body = client.call("/v1/search", query(kind, pool, rng))
            except OSError as exc:
                status, body = 0, str(exc).encode()
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                if status == 200:
                    latencies[kind].append(elapsed)
                else:
                    errors[kind] += 1
                    samples.setdefault(kind, f"{status}: {body[:200]!r}")

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    rows = {
        kind: {
            "requests": len(latencies[kind]) + errors[kind],
            "errors": errors[kind],
            "per_second": len(latencies[kind]) / wall,
            "p50_ms": percentile(latencies[kind], 50),
            "p99_ms": percentile(latencies[kind], 99),
        }
        for kind in KINDS
    }
    everything = [v for kind in KINDS for v in latencies[kind]]
    rows["all"] = {
        "requests": sum(r["requests"] for r in rows.values()),
        "errors": sum(errors.values()),
        "per_second": len(everything) / wall,
        "p50_ms": percentile(everything, 50),
        "p99_ms": percentile(everything, 99),
    }
    return {
        "url": args.url,
        "clients": args.clients,
        "seconds": round(wall, 2),
        "kinds": rows,
        "error_samples": samples,
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['clients']} clients, {result['seconds']} s against {result['url']}")
    print(f"{'kind':<10}{'requests':>10}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for kind, row in result["kinds"].items():
        print(
            f"{kind:<10}{row['requests']:>10}{row['errors']:>8}{row['per_second']:>9.1f}"
            f"{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
        )
    for kind, sample in result["error_samples"].items():
        print(f"first {kind} error: {sample}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the clipy serve base URL")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("load-results.json"), help="JSON output")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be within 1..{MAX_CLIENTS}")
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be within (0, {MAX_SECONDS}]")
    result = run(args)
    print_table(result)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.out}")
    return 1 if result["kinds"]["all"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
