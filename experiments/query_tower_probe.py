"""Probe query-text towers distilled from MiniLM: how close to MiniLM's feature of a query text
a model over the text's catalog words gets, on a validation fold, for the query words table
(``clipy_qdrant/encoders/fashion/query_words.py``) and richer models.

Data: the captions (names and attribute phrases) of training folds 2-4 are fitted; those of
validation fold 1 not among them are scored (held-out products are never read). Targets are
MiniLM's features from clipy's text feature cache. Score: cosine with MiniLM's feature over
the validation texts whose every word is in the fitted vocabulary, by text length.

Models: the table's recipe (ridge least squares of a mean of word vectors, ridge 0.01); the
same mean trained with a cosine loss; a deep averaging network (mean + MLP residual); an
attention-weighted mean + MLP; transformers of 1-3 layers over the words (d 384, 6 heads),
whose mean pooling adds to the mean of word vectors. Each starts from the ridge table.

Two steps, the second on a GPU where one is lent (any torch device works):

    python experiments/query_tower_probe.py prepare --catalog CATALOG --out DIR
    python experiments/query_tower_probe.py train DIR [--long] [--quick]
    python experiments/query_tower_probe.py cost      # CPU per query: MiniLM, the towers

``prepare`` writes DIR/qw_texts.json and DIR/qw8.npz (the targets as int8 with a scale per
row, 15 MB: cosine with the float features 0.99991 at worst); ``train`` prints one line per
model and writes DIR/qw_towers[_long].json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np


def prepare(catalog: str, out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from clipy_qdrant.config import Settings
    from clipy_qdrant.training.features import cached_text_features
    from clipy_qdrant.training.query_words import VALIDATION_FOLD, product_texts
    from ingest.readers import NAME_TEXT_TEMPLATE, open_catalog

    products = list(open_catalog(catalog, images=None, text_template=NAME_TEXT_TEMPLATE))
    folds = product_texts(products)
    fitted = list(
        dict.fromkeys(t for f, ts in sorted(folds.items()) if f != VALIDATION_FOLD for t in ts)
    )
    seen = set(fitted)
    val = [t for t in dict.fromkeys(folds[VALIDATION_FOLD]) if t not in seen]
    feats = cached_text_features(fitted + val, Settings().cache_dir)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    scale = np.abs(feats).max(1, keepdims=True) / 127
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "qw8.npz", q=np.round(feats / scale).astype(np.int8), scale=scale)
    (out / "qw_texts.json").write_text(json.dumps({"fitted": fitted, "validation": val}))
    print(f"{len(fitted)} fitted texts, {len(val)} validation texts -> {out}")


def train(here: str, long: bool, quick: bool) -> None:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    meta = json.loads(Path(here, "qw_texts.json").read_text())
    packed = np.load(Path(here, "qw8.npz"))
    feats = packed["q"].astype(np.float32) * packed["scale"]
    fitted, val = meta["fitted"], meta["validation"]
    if quick:
        feats = np.concatenate([feats[:2000], feats[len(fitted) : len(fitted) + 500]])
        fitted, val = fitted[:2000], val[:500]
    WORD = re.compile(r"\w+")
    words = {t: WORD.findall(t.lower()) for t in fitted + val}
    Y = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    Yf, Yv = Y[: len(fitted)], Y[len(fitted) :]
    vocab = {}
    for t in fitted:
        for w in words[t]:
            vocab.setdefault(w, len(vocab) + 1)  # 0 = padding
    V = len(vocab) + 1
    MAXLEN = 24

    def ids(texts):
        rows = [[vocab.get(w, -1) for w in words[t]][:MAXLEN] for t in texts]
        ok = [len(r) > 0 and all(i > 0 for i in r) for r in rows]
        arr = np.zeros((len(texts), MAXLEN), dtype=np.int64)
        for i, r in enumerate(rows):
            if ok[i]:
                arr[i, : len(r)] = r
        return arr, np.array(ok)

    Xf, okf = ids(fitted)
    Xv, okv = ids(val)
    Xf, Yf = Xf[okf], Yf[okf]
    Xv, Yv = Xv[okv], Yv[okv]
    lens_v = (Xv > 0).sum(1)
    print(
        f"vocab {V - 1}, fitted {len(Xf)}, validation covered {len(Xv)} of {len(val)}", flush=True
    )

    # Ridge table (the shipped fit: mean of word one-hots, ridge 0.01).
    def ridge_table(X, Y, ridge=0.01):
        n = len(X)
        mask = (X > 0).astype(np.float64)
        w = mask / mask.sum(1, keepdims=True)
        A = torch.zeros((n, V), dtype=torch.float64, device=dev)
        A.scatter_add_(1, torch.tensor(X, device=dev), torch.tensor(w, device=dev))
        A[:, 0] = 0
        G = A.T @ A + ridge * torch.eye(V, dtype=torch.float64, device=dev)
        T = A.T @ torch.tensor(Y, dtype=torch.float64, device=dev)
        return torch.linalg.solve(G, T).float()

    E0 = ridge_table(Xf, Yf)
    E0[0] = 0

    def masked_mean(e, x):
        m = (x > 0).float().unsqueeze(-1)
        return (e * m).sum(1) / m.sum(1).clamp(min=1)

    class Mean(nn.Module):
        def __init__(self):
            super().__init__()
            self.E = nn.Embedding(V, 384, padding_idx=0)
            self.E.weight.data.copy_(E0)

        def forward(self, x):
            return masked_mean(self.E(x), x)

    class DAN(Mean):
        def __init__(self, hidden=1024, p=0.1):
            super().__init__()
            self.mlp = nn.Sequential(
                nn.Linear(384, hidden), nn.GELU(), nn.Dropout(p), nn.Linear(hidden, 384)
            )
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

        def forward(self, x):
            m = masked_mean(self.E(x), x)
            return m + self.mlp(m)

    class AttnDAN(DAN):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.score = nn.Embedding(V, 1, padding_idx=0)
            nn.init.zeros_(self.score.weight)

        def forward(self, x):
            e = self.E(x)
            s = self.score(x).squeeze(-1).masked_fill(x == 0, -1e9)
            a = torch.softmax(s, 1).unsqueeze(-1)
            m = (e * a).sum(1)
            return m + self.mlp(m)

    class Tiny(Mean):
        def __init__(self, layers=2, p=0.1, ffn=768):
            super().__init__()
            self.pos = nn.Embedding(MAXLEN, 384)
            nn.init.zeros_(self.pos.weight)
            layer = nn.TransformerEncoderLayer(
                384, 6, ffn, dropout=p, batch_first=True, norm_first=True
            )
            self.enc = nn.TransformerEncoder(layer, layers)
            self.out = nn.Linear(384, 384)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def forward(self, x):
            e = self.E(x)
            m = masked_mean(e, x)
            h = self.enc(e + self.pos.weight[: x.shape[1]], src_key_padding_mask=(x == 0))
            return m + self.out(masked_mean(h, x))

    def score(model):
        model.eval()
        with torch.no_grad():
            xv = torch.tensor(Xv, device=dev)
            p = F.normalize(model(xv), dim=-1)
            cos = (p * torch.tensor(Yv, device=dev)).sum(1).cpu().numpy()
        model.train()
        return cos

    def summary(cos):
        res = {
            "mean": float(cos.mean()),
            "p5": float(np.percentile(cos, 5)),
            "min": float(cos.min()),
        }
        for lo, hi in ((1, 3), (4, 6), (7, 99)):
            sel = (lens_v >= lo) & (lens_v <= hi)
            res[f"words {lo}-{hi}"] = [
                int(sel.sum()),
                float(cos[sel].mean()) if sel.any() else None,
            ]
        return res

    def fit(model, epochs, lr, wd=0.0, batch=512):
        model.to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        xf = torch.tensor(Xf, device=dev)
        yf = torch.tensor(Yf, device=dev)
        n = len(xf)
        steps = epochs * ((n + batch - 1) // batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
        best, best_ep, hist = -1, -1, []
        for ep in range(epochs):
            perm = torch.randperm(n, device=dev)
            for i in range(0, n, batch):
                b = perm[i : i + batch]
                loss = (1 - F.cosine_similarity(model(xf[b]), yf[b], dim=-1)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            if ep % 5 == 4 or ep == epochs - 1:
                c = float(score(model).mean())
                hist.append((ep + 1, c))
                if c > best:
                    best, best_ep = c, ep + 1
        return best, best_ep, hist

    results = {}
    ridge = Mean().to(dev)
    results["ridge table (shipped recipe)"] = summary(score(ridge))
    print("ridge", results["ridge table (shipped recipe)"], flush=True)
    configs = [
        ("mean, cosine loss", lambda: Mean(), 40, 3e-3, 0.0),
        ("DAN 1024", lambda: DAN(1024, 0.1), 60, 1e-3, 1e-4),
        ("DAN 2048 p0.2", lambda: DAN(2048, 0.2), 60, 1e-3, 1e-4),
        ("attention DAN 1024", lambda: AttnDAN(hidden=1024, p=0.1), 60, 1e-3, 1e-4),
        ("transformer 1 layer", lambda: Tiny(1, 0.1), 60, 5e-4, 1e-4),
        ("transformer 2 layers", lambda: Tiny(2, 0.1), 60, 5e-4, 1e-4),
    ]
    if long:
        configs = [
            ("transformer 1 layer, 150 epochs", lambda: Tiny(1, 0.1), 150, 5e-4, 1e-4),
            ("transformer 2 layers, 150 epochs", lambda: Tiny(2, 0.1), 150, 5e-4, 1e-4),
            (
                "transformer 2 layers ffn 1536, 150 epochs",
                lambda: Tiny(2, 0.1, 1536),
                150,
                5e-4,
                1e-4,
            ),
            ("transformer 3 layers, 150 epochs", lambda: Tiny(3, 0.1), 150, 5e-4, 1e-4),
        ]
    for name, make, epochs, lr, wd in configs:
        t0 = time.time()
        model = make()
        best, best_ep, hist = fit(model, 1 if quick else epochs, lr, wd)
        cos = score(model)
        results[name] = {
            **summary(cos),
            "best_mean_during": best,
            "best_epoch": best_ep,
            "curve": hist,
            "seconds": round(time.time() - t0, 1),
            "params": sum(p.numel() for p in model.parameters()),
        }
        print(name, {k: v for k, v in results[name].items() if k != "curve"}, flush=True)
    name = "qw_towers_long.json" if long else "qw_towers.json"
    Path(here, name).write_text(json.dumps(results, indent=1))


def cost(rounds: int = 2000) -> None:
    """CPU per query of MiniLM (clipy's text tower, ONNX Runtime) and of the transformer
    towers' forward pass in numpy, each on one thread; the towers with random weights of the
    trained shapes (d 384, 6 heads, 6,820 words, 24 positions): the work does not depend on
    the values."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    d, heads = 384, 6

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    def layer(ffn: int) -> dict[str, np.ndarray]:
        return {
            "qkv": weights(d, 3 * d),
            "o": weights(d, d),
            "w1": weights(d, ffn),
            "w2": weights(ffn, d),
            "b1": np.zeros(ffn, np.float32),
        }

    def norm(x: np.ndarray) -> np.ndarray:
        m = x.mean(-1, keepdims=True)
        return (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-5)

    def forward(table, pos, out, layers, ids):  # type: ignore[no-untyped-def]
        e = table[ids]
        x = e + pos[: len(ids)]
        for w in layers:
            qkv = norm(x) @ w["qkv"]
            q, k, v = (
                qkv[:, i * d : (i + 1) * d].reshape(-1, heads, d // heads).transpose(1, 0, 2)
                for i in range(3)
            )
            a = q @ k.transpose(0, 2, 1) / np.sqrt(d // heads)
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            x = x + (a @ v).transpose(1, 0, 2).reshape(-1, d) @ w["o"]
            h = norm(x) @ w["w1"] + w["b1"]
            x = x + (0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h**3)))) @ w["w2"]
        m = e.mean(0) + x.mean(0) @ out
        return m / np.linalg.norm(m)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from clipy_qdrant.config import Settings
    from clipy_qdrant.encoders.fashion.towers import TextTower

    minilm = TextTower(cache_dir=Settings().cache_dir, threads=1)
    texts = {4: "men black casual shoes", 8: "puma men black running shoes with white sole"}
    for words, text in texts.items():
        for _ in range(rounds // 20):
            minilm.features([text], batch_size=1)
        start = time.process_time()
        for _ in range(rounds // 4):
            minilm.features([text], batch_size=1)
        ms = (time.process_time() - start) / (rounds // 4) * 1000
        print(f"MiniLM (ONNX Runtime, one thread), {words} words: {ms:.3f} ms of CPU per query")
    table, pos, out = weights(6820, d), weights(24, d), weights(d, d)
    towers = {
        "1 layer, FFN 768": [layer(768)],
        "2 layers, FFN 768": [layer(768), layer(768)],
        "2 layers, FFN 1,536": [layer(1536), layer(1536)],
    }
    with threadpool_limits(1):
        for name, layers in towers.items():
            for words in (4, 8):
                ids = rng.integers(1, 6820, words)
                for _ in range(rounds // 10):
                    forward(table, pos, out, layers, ids)
                start = time.process_time()
                for _ in range(rounds):
                    forward(table, pos, out, layers, ids)
                ms = (time.process_time() - start) / rounds * 1000
                print(f"{name}, {words} words: {ms:.3f} ms of CPU per query")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("dir")
    t.add_argument("--long", action="store_true", help="transformers only, 150 epochs")
    t.add_argument("--quick", action="store_true", help="2,000 texts, one epoch: a smoke run")
    sub.add_parser("cost", help="CPU per query of the transformer towers in numpy")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.catalog, args.out)
    elif args.step == "cost":
        cost()
    else:
        train(args.dir, args.long, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
