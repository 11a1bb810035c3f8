"""Probe fine-tuning the image backbone's last stages for shopper-photo queries, on one fold.

Backbone: EfficientNet-Lite0 at 160 px with the fashion-mini tower's poolings
(``gap,gmp,mid``, 3,184-d), built by the tower's own ``_PooledBackbone``. The network is
split before its last ``--stages`` MBConv stages (2: before block 11, the first 192-channel
block; the activation there is (112, 10, 10) at 160 px). The part before the split stays
frozen and runs once per image: its activations are cached (float32) together with the
``mid`` averages of the frozen blocks, so that training and evaluation run only the tail
(the last stages, the conv head and the poolings).

Training products: the first ``--train`` catalog products with an image whose id % 5 is
neither 0 (held out: their rows are skipped, their images never loaded) nor ``--fold``.
Each gives its catalog image and ``--views`` shopper photos
(:func:`clipy_qdrant.eval.perturb.shopper_photo`, kinds drawn from ``--kinds``, by default
:data:`TRAIN_KINDS`, keys ``finetune-K:ID`` and seed ``TRAIN_SEED + --seed``, so no view
is ever an evaluation query image), written through a JPEG file at quality 95 as
the queries are. The tail, initialised from the pretrained weights and kept in eval mode
(BatchNorm running statistics and no drop-connect, as at inference), is trained with
InfoNCE from each view to its product's catalog image against the other catalog images of
the batch (temperature ``--tau``) on the L2-normalised pooled features, plus ``--distill``
times the mean cosine distance of each catalog image's features to the frozen network's;
AdamW, ``--lr``, ``--epochs``, batches of ``--batch`` products, one seed.

Evaluation: as ``experiments/backbone_probe.py`` (raw pooled features, L2-normalised, exact
cosine; known-item hit@1 / hit@10 / MRR@10, type and type + colour P@10), the frozen and
the fine-tuned tail on the same cached activations. Gallery: the products with an image
among the first ``--limit`` catalog rows, less the held-out ones (id % 5 == 0); queries:
``--n`` fold products of it (id % 5 == FOLD, never trained on) under each perturbation
with clipy eval's seed convention. The training products among the first ``--limit`` rows
(id % 5 in 2-4) are in the gallery: their catalog images were trained on.

Timing (``--threads`` intra-op threads): the frozen part, the tail and the whole network in
torch at batch 32 and batch 1, and the whole frozen and fine-tuned networks exported to
ONNX by the tower, median ms per image.

    python experiments/finetune_probe.py --limit 3000 --n 200 --fold 1 --train 4000

Prints tables, writes JSON to ``--out``; activations are cached in ``--cache``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipy_qdrant.config import Settings
from clipy_qdrant.encoders.fashion.towers import ImageTower, _PooledBackbone, preprocess_batch
from clipy_qdrant.eval.perturb import shopper_photo
from clipy_qdrant.eval.photo_queries import choose_photo_products

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_probe import as_file, metrics, npy_cached, unit, write_report

PERTURBATIONS = ("clean", "crop", "rotate", "jpeg", "background", "lighting", "reshoot", "all")
TRAIN_KINDS = ("reshoot", "crop", "background", "lighting", "all")
TRAIN_SEED = 1000
BACKBONE = "efficientnet-lite0"
RESOLUTION = 160
POOLING = "gap,gmp,mid"


@contextmanager
def clock(record: dict[str, Any], name: str) -> Iterator[None]:
    """Wall and process CPU seconds of the block, stored under ``record[name]``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    record[name] = {
        "wall_s": round(time.perf_counter() - wall, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
    }
    print(f"{name}: {record[name]}", file=sys.stderr)


class Split:
    """The pooled backbone cut before block ``start``: ``head`` (pixels -> activation and the
    ``mid`` averages of the frozen blocks) and ``tail`` (those -> the tower's features)."""

    def __init__(self, pooled: Any, stages: int) -> None:
        net = pooled.net
        filters = [block._block_args.output_filters for block in net._blocks]
        starts = [i for i in range(len(filters)) if i == 0 or filters[i] != filters[i - 1]]
        self.pooled, self.net, self.start = pooled, net, starts[-stages]
        self.mid_blocks = pooled.mid_blocks

    def head(self, pixels: Any) -> tuple[Any, Any]:
        import torch

        net = self.net
        x = pixels.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
        x = net._swish(net._bn0(net._conv_stem(x)))
        mids = []
        for i, block in enumerate(net._blocks[: self.start]):
            x = block(x)
            if i in self.mid_blocks:
                mids.append(x.mean(dim=(2, 3)))
        return x, torch.cat(mids, dim=1) if mids else x.new_zeros((len(x), 0))

    def tail(self, x: Any, frozen_mids: Any) -> Any:
        import torch

        net = self.net
        mids = [frozen_mids]
        for i in range(self.start, len(net._blocks)):
            x = net._blocks[i](x)
            if i in self.mid_blocks:
                mids.append(x.mean(dim=(2, 3)))
        x = net._swish(net._bn1(net._conv_head(x)))
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3)), *mids], dim=1)

    def tail_parameters(self) -> list[Any]:
        modules = [*self.net._blocks[self.start :], self.net._conv_head, self.net._bn1]
        return [p for module in modules for p in module.parameters()]


def head_cache(split: Split, images: list[Image.Image], batch: int = 32) -> dict[str, np.ndarray]:
    """Frozen activations and frozen mids of ``images``."""
    import torch

    acts, mids = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            pixels = preprocess_batch(images[start : start + batch], RESOLUTION)
            a, m = split.head(torch.from_numpy(pixels))
            acts.append(a.numpy())
            mids.append(m.numpy())
    return {"acts": np.concatenate(acts), "mids": np.concatenate(mids)}


def tail_features(split: Split, cache: dict[str, np.ndarray], batch: int = 128) -> np.ndarray:
    """Pooled features of cached activations through ``split``'s tail."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(cache["acts"]), batch):
            a = torch.from_numpy(cache["acts"][start : start + batch])
            m = torch.from_numpy(cache["mids"][start : start + batch])
            out.append(split.tail(a, m).numpy())
    return np.concatenate(out)


def cached_heads(
    path: Path, split: Split, images: Callable[[], list[Image.Image]]
) -> dict[str, np.ndarray]:
    """:func:`head_cache` of ``images()``, kept as two ``.npy`` files under ``path``."""
    cache: dict[str, np.ndarray] = {}
    computed: dict[str, np.ndarray] = {}

    def part(name: str) -> Callable[[], np.ndarray]:
        def compute() -> np.ndarray:
            if not computed:
                computed.update(head_cache(split, images()))
            return computed[name]

        return compute

    for name in ("acts", "mids"):
        cache[name] = npy_cached(path.with_name(f"{path.name}-{name}.npy"), part(name))
    return cache


def training_views(
    catalog: str, n: int, views: int, fold: int, seed: int, kinds: tuple[str, ...] = TRAIN_KINDS
) -> tuple[list[str], list[Image.Image]]:
    """Training products' ids and, per product, its catalog image then ``views`` shopper
    photos (product-major order)."""
    from ingest.readers import open_catalog

    ids: list[str] = []
    out: list[Image.Image] = []
    rng = np.random.default_rng(TRAIN_SEED + seed)
    for product in open_catalog(catalog):
        if len(ids) == n:
            break
        if int(product.product_id) % 5 in (0, fold) or not product.has_image or product.error:
            continue
        image = product.load_image()
        ids.append(product.product_id)
        out.append(image)
        for k in range(views):
            kind = kinds[int(rng.integers(len(kinds)))]
            key = f"finetune-{k}:{product.product_id}"
            out.append(as_file(shopper_photo(image, kind, key, TRAIN_SEED + seed)))
    return ids, out


def train_tail(
    split: Split,
    cache: dict[str, np.ndarray],
    anchors: np.ndarray,
    views: int,
    args: Any,
    after_epoch: Callable[[], dict[str, float]],
) -> list[dict[str, float]]:
    """Train ``split``'s tail in place (see the module doc) from ``cache`` (each product's
    catalog image then its ``views`` photos) and ``anchors`` (the frozen network's features
    of each product's catalog image); per epoch, the mean losses and what ``after_epoch()``
    reports."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    params = split.tail_parameters()
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    group = views + 1
    n = len(cache["acts"]) // group
    targets_frozen = torch.from_numpy(unit(anchors))
    rng = np.random.default_rng(args.seed)
    history = []
    for epoch in range(args.epochs):
        order = rng.permutation(n)
        sums = {"nce": 0.0, "distill": 0.0}
        steps = 0
        for start in range(0, n, args.batch):
            products = order[start : start + args.batch]
            rows = (products[:, None] * group + np.arange(group)[None, :]).reshape(-1)
            a = torch.from_numpy(cache["acts"][rows])
            m = torch.from_numpy(cache["mids"][rows])
            f = F.normalize(split.tail(a, m), dim=1).view(len(products), group, -1)
            cat, shots = f[:, 0], f[:, 1:].reshape(-1, f.shape[-1])
            logits = shots @ cat.T / args.tau
            targets = torch.arange(len(products)).repeat_interleave(views)
            nce = F.cross_entropy(logits, targets)
            distill = (1 - (cat * targets_frozen[products]).sum(dim=1)).mean()
            loss = nce + args.distill * distill
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            sums["nce"] += nce.item()
            sums["distill"] += distill.item()
            steps += 1
        history.append({**{k: v / steps for k, v in sums.items()}, **after_epoch()})
        print(f"epoch {epoch + 1}: {history[-1]}", file=sys.stderr)
    for p in params:
        p.requires_grad_(False)
    return history


def time_networks(
    frozen: Split, tuned: Split, pixels: np.ndarray, cache: Path, rounds: int
) -> dict[str, dict[str, float]]:
    """ms per image (median) of the network's parts in torch and of the whole frozen and
    fine-tuned networks through the tower's ONNX export, at batch 32 and batch 1 (one
    thread, the runs interleaved round by round so that a shared machine's load drifts over
    all of them alike); and the largest feature change fine-tuning makes on these images."""
    import torch

    towers = {
        name: ImageTower(
            BACKBONE, RESOLUTION, runtime="onnx", cache_dir=folder, threads=1, pooling=POOLING
        )
        for name, folder in (("frozen", cache), ("fine-tuned", cache / "finetuned"))
    }
    towers["fine-tuned"]._torch_model = tuned.pooled  # the module its export is made from
    towers["fine-tuned"].onnx_path().unlink(missing_ok=True)
    x = {b: torch.from_numpy(pixels[:b]) for b in (32, 1)}
    with torch.inference_mode():
        acts = {b: frozen.head(x[b]) for b in x}
    runs: dict[str, Callable[[int], Any]] = {
        "torch frozen part (stem to split)": lambda b: frozen.head(x[b]),
        "torch tail (frozen weights)": lambda b: frozen.tail(*acts[b]),
        "torch tail (fine-tuned weights)": lambda b: tuned.tail(*acts[b]),
        "torch whole network (frozen)": lambda b: frozen.pooled(x[b]),
        "onnx whole network (frozen)": lambda b: towers["frozen"].features_from_pixels(pixels[:b]),
        "onnx whole network (fine-tuned)": lambda b: towers["fine-tuned"].features_from_pixels(
            pixels[:b]
        ),
    }
    times: dict[tuple[str, int], list[float]] = {(name, b): [] for name in runs for b in x}
    with torch.inference_mode():
        for round_ in range(rounds + 1):  # round 0 warms up; the runs interleave per round
            for (name, b), got in times.items():
                t0 = time.perf_counter()
                runs[name](b)
                if round_:
                    got.append((time.perf_counter() - t0) * 1000 / b)
    out = {
        name: {f"ms/image batch {b}": float(np.median(times[name, b])) for b in x} for name in runs
    }
    frozen_f, tuned_f = (towers[k].features_from_pixels(pixels) for k in ("frozen", "fine-tuned"))
    change = tuned_f - frozen_f
    out["fine-tuned minus frozen ONNX features"] = {"max |difference|": float(abs(change).max())}
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=str(Settings().catalog))
    parser.add_argument("--fold", type=int, default=1, help="queries about id %% 5 == FOLD")
    parser.add_argument("--limit", type=int, default=3000, help="gallery: first N catalog rows")
    parser.add_argument("--n", type=int, default=200, help="query products")
    parser.add_argument("--train", type=int, default=3000, help="training products")
    parser.add_argument("--views", type=int, default=2, help="shopper photos per product")
    parser.add_argument("--kinds", default=",".join(TRAIN_KINDS), help="training views' kinds")
    parser.add_argument("--stages", type=int, default=2, help="trailing stages to train")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="products per batch")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--tau", type=float, default=0.07)
    parser.add_argument("--distill", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturbations", default=",".join(PERTURBATIONS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds (0: no timing)")
    parser.add_argument("--cache", default="experiments-out/finetune-cache")
    parser.add_argument("--out", default="experiments-out/finetune_probe.json")
    args = parser.parse_args(argv)
    if args.fold == 0:
        parser.error("fold 0 is the held-out split; probe a validation fold (1-4)")
    torch.set_num_threads(args.threads)
    from ingest.readers import open_catalog

    started = time.perf_counter()
    timing: dict[str, Any] = {}
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = [p for p in open_catalog(args.catalog, limit=args.limit) if int(p.product_id) % 5]
    by_id = {p.product_id: p for p in rows if p.has_image and not p.error}
    gallery = list(by_id)
    fields = ("articleType", "baseColour")
    payloads = {
        pid: {"product_id": pid, **{k: str(p.metadata.get(k) or "") for k in fields}}
        for pid, p in by_id.items()
    }
    pairs = Counter((p["articleType"], p["baseColour"]) for p in payloads.values())
    chosen = choose_photo_products(
        list(payloads.values()),
        n=args.n,
        seed=args.seed,
        heldout=lambda pid: int(pid) % 5 == args.fold,
    )
    qids = [str(p["product_id"]) for p in chosen]
    print(f"gallery {len(gallery)}, {len(qids)} fold-{args.fold} queries", file=sys.stderr)
    images = {pid: by_id[pid].load_image() for pid in gallery}

    frozen = Split(_PooledBackbone.build(BACKBONE, POOLING), args.stages)
    tuned = Split(copy.deepcopy(frozen.pooled), args.stages)
    with torch.inference_mode():
        x = torch.from_numpy(preprocess_batch([images[p] for p in gallery[:8]], RESOLUTION))
        split_gap = float((frozen.tail(*frozen.head(x)) - frozen.pooled(x)).abs().max())
    print(f"split before block {frozen.start}; head+tail vs whole: {split_gap}", file=sys.stderr)
    tag = f"{BACKBONE}-{RESOLUTION}-s{frozen.start}"
    perturbations = [p for p in args.perturbations.split(",") if p]

    def photos(p: str) -> Callable[[], list[Image.Image]]:
        return lambda: [as_file(shopper_photo(images[q], p, q, args.seed)) for q in qids]

    with clock(timing, "cache activations (gallery + queries)"):
        gal_cache = cached_heads(
            cache / f"{tag}-gallery-{args.limit}", frozen, lambda: [images[p] for p in gallery]
        )
        q_cache = {
            p: cached_heads(
                cache / f"{tag}-q-{p}-{args.limit}-{args.fold}-{args.n}-{args.seed}",
                frozen,
                photos(p),
            )
            for p in perturbations
        }
    train_ids: list[str] = []
    kinds = tuple(k for k in args.kinds.split(",") if k)
    views_tag = "" if kinds == TRAIN_KINDS else "-" + "+".join(kinds)

    def train_images() -> list[Image.Image]:
        ids, views = training_views(
            args.catalog, args.train, args.views, args.fold, args.seed, kinds
        )
        train_ids.extend(ids)
        return views

    with clock(timing, "cache activations (training views)"):
        train_cache = cached_heads(
            cache / f"{tag}-train-{args.train}x{args.views}-{args.fold}-{args.seed}{views_tag}",
            frozen,
            train_images,
        )
    n_views = len(train_cache["acts"])
    activation_shape = list(train_cache["acts"].shape[1:])
    assert not train_ids or all(int(p) % 5 not in (0, args.fold) for p in train_ids)

    own = np.array([gallery.index(q) for q in qids])
    top1: dict[str, dict[str, np.ndarray]] = {}

    def evaluate(name: str, split: Split) -> dict[str, dict[str, float]]:
        gal = unit(tail_features(split, gal_cache))
        scored, top1[name] = {}, {}
        for p, qc in q_cache.items():
            scores = unit(tail_features(split, qc)) @ gal.T
            scored[p] = metrics(scores, qids, gallery, payloads, pairs)
            top1[name][p] = scores.argmax(axis=1) == own
        return scored

    results = {"frozen": evaluate("frozen", frozen)}

    def watch() -> dict[str, float]:
        """hit@1 of the tail being trained, per perturbation (the epoch curve)."""
        with torch.inference_mode():
            return {f"hit@1 {p}": m["hit@1"] for p, m in evaluate("epoch", tuned).items()}

    with clock(timing, "frozen tail over the training catalog images"):
        anchors = tail_features(frozen, {k: v[:: args.views + 1] for k, v in train_cache.items()})
    with clock(timing, "training"):
        history = train_tail(tuned, train_cache, anchors, args.views, args, watch)
    results["fine-tuned"] = evaluate("fine-tuned", tuned)
    paired = {
        p: {
            "gain": int((top1["fine-tuned"][p] & ~top1["frozen"][p]).sum()),
            "loss": int((top1["frozen"][p] & ~top1["fine-tuned"][p]).sum()),
        }
        for p in perturbations
    }

    speed = {}
    if args.rounds:
        pixels = preprocess_batch([images[p] for p in gallery[:32]], RESOLUTION)
        with clock(timing, "speed probe"):
            speed = time_networks(frozen, tuned, pixels, cache, args.rounds)

    header = ["model", "perturbation", "hit@1", "hit@10", "MRR", "type P@10", "t+c P@10"]
    print("\t".join(header))
    for model, per in results.items():
        for p, m in per.items():
            print("\t".join([model, p, *(f"{v:.3f}" for v in m.values())]))
    print("rank-1 gains / losses (fine-tuned vs frozen):", paired)
    print("speed:", speed)
    write_report(
        Path(args.out),
        {
            "fold": args.fold,
            "gallery": len(gallery),
            "queries": len(qids),
            "training products": n_views // (args.views + 1),
            "training views": n_views,
            "split before block": frozen.start,
            "activation shape": activation_shape,
            "head+tail vs whole network max |difference|": split_gap,
            "settings": {k: v for k, v in vars(args).items() if k not in ("catalog",)},
            "train kinds": list(kinds),
            "history": history,
            "results": results,
            "paired rank-1": paired,
            "timing": timing,
            "speed_ms": speed,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
