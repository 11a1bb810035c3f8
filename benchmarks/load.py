"""Load test of a running ``clipy serve``: concurrent clients send a mix of text, image,
filtered and more-like-this queries (or the kinds ``--kinds`` names) for a fixed time, then a
table of throughput, errors and p50/p99 latency per query kind is printed and written as JSON.

Query texts come from the server's own catalog: product names and attribute phrases
("Men Blue Casual Shoes") of the products that seed searches return, ``--texts`` distinct
strings (fewer when the searches find fewer). The clients draw them from one shuffled pool without replacement, so a
text repeats only after the whole pool has been sent (the result counts the repeats): a
server-side cache of query embeddings gets no hits unless the run outlasts the pool.

Standalone (standard library, plus Pillow when the server's pictures are not local) and
bounded: it stops after ``--seconds`` (at most 600) and talks to a loopback address only.

    python benchmarks/load.py --url http://127.0.0.1:8000 --clients 8 --seconds 30
    python benchmarks/load.py --kinds text        # text queries only
    python benchmarks/load.py --warmup 15         # 15 s of load first, not recorded

With ``--server-pid`` (a server on this machine) the result also gives the server's CPU
time per answered query (user + system of it and its worker processes, from ``/proc``): on
a shared machine that number drifts less than the throughput, which depends on the CPU the
server gets.

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
#: Seed searches whose hits give the pool of query texts (and the product ids).
SEEDS = [
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
#: The payload fields of an attribute phrase, in the order a shopper types them.
PHRASE_FIELDS = ("gender", "baseColour", "usage", "articleType")
NAME_FIELDS = ("productDisplayName", "name", "title")


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


def product_texts(payload: dict[str, Any]) -> list[str]:
    """A product's name and its attribute phrase (the fields it has), as query texts."""
    texts = [str(payload[f]) for f in NAME_FIELDS if str(payload.get(f) or "").strip()][:1]
    words = [str(payload[f]) for f in PHRASE_FIELDS if str(payload.get(f) or "").strip()]
    if len(words) >= 2:
        texts.append(" ".join(words))
    return texts


def prepare(client: Client, rng: random.Random, want_texts: int) -> dict[str, list[Any]]:
    """Product ids, query texts, images and filters taken from the server itself."""
    info = client.json("/v1/info")
    if not info["products"]:
        raise SystemExit("load: the server's store is empty")
    limits = info.get("limits", {})
    page = min(100, int(limits.get("max_k", 100)))
    depth = int(limits.get("max_depth", 1000))
    ids: list[str] = []
    texts: dict[str, None] = dict.fromkeys(SEEDS)
    for offset in range(0, depth - page + 1, page):
        for seed in SEEDS:
            body = {"text": seed, "k": page, "offset": offset}
            for hit in client.json("/v1/search", body)["hits"]:
                if offset == 0 and len(ids) < 20 * len(SEEDS):
                    ids.append(hit["product_id"])
                texts.update(dict.fromkeys(product_texts(hit.get("payload") or {})))
        if len(texts) >= want_texts:
            break
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
    pool = list(texts)
    rng.shuffle(pool)
    pool = pool[:want_texts]
    return {"ids": ids, "texts": pool, "images": images, "filters": filters or ["year>=0"]}


class TextPool:
    """The query texts, drawn by every client from one shuffled order without replacement;
    after the last one the order starts again (each such draw is counted as a repeat)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.next = 0
        self.repeats = 0
        self.lock = threading.Lock()

    def draw(self) -> str:
        with self.lock:
            i = self.next
            self.next += 1
            if i >= len(self.texts):
                self.repeats += 1
            return self.texts[i % len(self.texts)]


def query(
    kind: str, pool: dict[str, list[Any]], texts: TextPool, rng: random.Random
) -> dict[str, Any]:
    if kind == "text":
        return {"text": texts.draw(), "k": 24}
    if kind == "image":
        return {"image": rng.choice(pool["images"]), "k": 24}
    if kind == "filtered":
        return {"text": texts.draw(), "filters": [rng.choice(pool["filters"])], "k": 24}
    return {"like": rng.choice(pool["ids"]), "k": 24}


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds so far of process ``pid`` and the processes under it (a
    ``clipy serve --workers`` server's workers); ``None``: no pid, or no /proc."""
    if pid is None:
        return None
    stats: dict[int, list[str]] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stats[int(path.parent.name)] = path.read_text().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue
    if pid not in stats:
        return None
    tree, todo = set(), [pid]
    while todo:
        current = todo.pop()
        tree.add(current)
        todo.extend(p for p, f in stats.items() if int(f[1]) == current and p not in tree)
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in tree)
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    check_loopback(args.url)
    client = Client(args.url, os.environ.get("CLIPY_SERVE_API_KEY"))
    pool = prepare(client, random.Random(args.seed), args.texts)
    texts = TextPool(pool["texts"])
    kinds = args.kinds
    latencies: dict[str, list[float]] = {k: [] for k in kinds}
    errors: dict[str, int] = dict.fromkeys(kinds, 0)
    samples: dict[str, str] = {}
    lock = threading.Lock()

    def worker(number: int, deadline: float, record: bool) -> None:
        rng = random.Random(args.seed + number + (0 if record else 7919))
        i = number
        while time.monotonic() < deadline:
            kind = kinds[i % len(kinds)]
            i += 1
            body = query(kind, pool, texts, rng)
            start = time.perf_counter()
            try:
                status, body = client.call("/v1/search", body)
            except OSError as exc:
                status, body = 0, str(exc).encode()
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                if not record:
                    continue
                if status == 200:
                    latencies[kind].append(elapsed)
                else:
                    errors[kind] += 1
                    samples.setdefault(kind, f"{status}: {body[:200]!r}")

    def clients(seconds: float, record: bool) -> None:
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=worker, args=(n, deadline, record)) for n in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    if args.warmup > 0:
        clients(args.warmup, record=False)
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds(args.server_pid)
    started = time.monotonic()
    clients(args.seconds, record=True)
    wall = time.monotonic() - started
    cpu_after = cpu_seconds(args.server_pid)
    rows = {
        kind: {
            "requests": len(latencies[kind]) + errors[kind],
            "errors": errors[kind],
            "per_second": len(latencies[kind]) / wall,
            "p50_ms": percentile(latencies[kind], 50),
            "p99_ms": percentile(latencies[kind], 99),
        }
        for kind in kinds
    }
    everything = [v for kind in kinds for v in latencies[kind]]
    rows["all"] = {
        "requests": sum(r["requests"] for r in rows.values()),
        "errors": sum(errors.values()),
        "per_second": len(everything) / wall,
        "p50_ms": percentile(everything, 50),
        "p99_ms": percentile(everything, 99),
    }
    answered = len(everything)
    cpu_ms = (
        None
        if cpu_before is None or cpu_after is None or not answered
        else round((cpu_after - cpu_before) * 1000 / answered, 2)
    )
    return {
        "url": args.url,
        "clients": args.clients,
        "seconds": round(wall, 2),
        "warmup_seconds": args.warmup,
        "text_pool": len(texts.texts),
        "text_repeats": texts.repeats,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "server_cpu_ms_per_query": cpu_ms,
        "kinds": rows,
        "error_samples": samples,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{result['clients']} clients, {result['seconds']} s against {result['url']}; "
        f"{result['text_pool']} distinct texts, {result['text_repeats']} repeated; "
        "load average (1 min) {:.1f} -> {:.1f}".format(*result["load_average"])
    )
    print(f"{'kind':<10}{'requests':>10}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for kind, row in result["kinds"].items():
        print(
            f"{kind:<10}{row['requests']:>10}{row['errors']:>8}{row['per_second']:>9.1f}"
            f"{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
        )
    if result["server_cpu_ms_per_query"] is not None:
        print(f"server CPU per answered query: {result['server_cpu_ms_per_query']:.1f} ms")
    for kind, sample in result["error_samples"].items():
        print(f"first {kind} error: {sample}", file=sys.stderr)


def kind_list(value: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown kind(s) {', '.join(unknown) or '(none)'}; known: {', '.join(KINDS)}"
        )
    return tuple(dict.fromkeys(kinds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="load.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the clipy serve base URL")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send queries")
    parser.add_argument(
        "--kinds",
        type=kind_list,
        default=KINDS,
        help=f"comma-separated query kinds to send, in turn (default: {','.join(KINDS)})",
    )
    parser.add_argument(
        "--texts",
        type=int,
        default=3000,
        help="distinct query texts in the pool (a small pool repeats texts)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="seconds of the same load before measuring, not recorded (a fresh server "
        "fills its caches of product ids and hubness values)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--server-pid", type=int, default=None, help="the server's pid: report its CPU per query"
    )
    parser.add_argument("--out", type=Path, default=Path("load-results.json"), help="JSON output")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be within 1..{MAX_CLIENTS}")
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be within (0, {MAX_SECONDS}]")
    if not 0 <= args.warmup <= MAX_SECONDS:
        parser.error(f"--warmup must be within [0, {MAX_SECONDS}]")
    result = run(args)
    print_table(result)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.out}")
    return 1 if result["kinds"]["all"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
