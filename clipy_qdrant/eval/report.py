"""Render evaluation results: terminal tables, JSON, a per-query CSV and a PNG plot.

All functions take result objects from :mod:`clipy_qdrant.eval.runner` and return text or
dicts, or write one file; nothing here searches or computes metrics.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipy_qdrant.eval.catalog_queries import KNOWN_ITEM, UNSEEN_NAME
from clipy_qdrant.eval.photo_queries import PHOTO
from clipy_qdrant.eval.runner import ABRun, EvalRun, SetResult, config_key, image_share
from clipy_qdrant.fusion import FusionConfig

#: Columns of the "best setting per query set" table.
SUMMARY_METRICS: tuple[str, ...] = (
    "ndcg@10",
    "mrr@10",
    "map@10",
    "precision@1",
    "precision@10",
    "recall@10",
    "hit_rate@10",
)

#: Metrics of the Marqo-FashionCLIP leaderboard: text-to-image (known item) and
#: category-to-product. Its MRR is reported here as mrr@10.
LEADERBOARD_METRICS: dict[str, tuple[str, ...]] = {
    "known-item": ("recall@1", "recall@10", "mrr@10"),
    "category": ("precision@1", "precision@10", "mrr@10"),
}
CATEGORY_PREFIX = "category/"


def _num(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _method_label(cfg: FusionConfig, configs: Sequence[FusionConfig]) -> str:
    """The method name, with rrf_k when the grid holds several rrf_k values and the lexical
    weight when it holds several of those."""
    ks = {c.rrf_k for c in configs if c.method == "rrf"}
    label = f"rrf k={cfg.rrf_k}" if cfg.method == "rrf" and len(ks) > 1 else cfg.method
    if len({c.w_lexical for c in configs}) > 1:
        label += f" lex={cfg.w_lexical:g}"
    return label


def _present(run: EvalRun, names: Sequence[str]) -> list[str]:
    return [m for m in names if m in run.metrics]


def _set_line(result: SetResult) -> str:
    galleries = ", ".join(f"{g} gallery: {n}" for g, n in sorted(result.galleries.items()))
    skipped = (
        f", {result.skipped} skipped (nothing relevant in the gallery)" if result.skipped else ""
    )
    return f"{result.name}: {len(result.query_ids)} queries ({galleries or 'none'}){skipped}"


# -- leaderboard form ------------------------------------------------------------------------


def _pooled(run: EvalRun, names: Sequence[str]) -> SetResult | None:
    parts = [run.sets[n] for n in names if n in run.sets and run.sets[n].query_ids]
    if not parts:
        return None
    galleries: dict[str, int] = {}
    for p in parts:
        for g, n in p.galleries.items():
            galleries[g] = galleries.get(g, 0) + n
    return SetResult(
        name="category (all fields)",
        query_ids=[q for p in parts for q in p.query_ids],
        metrics=run.metrics,
        configs=run.configs,
        scores=np.concatenate([p.scores for p in parts], axis=1),
        galleries=galleries,
        skipped=sum(p.skipped for p in parts),
    )


def _find(configs: Sequence[FusionConfig], w_image_only: bool) -> int | None:
    for i, cfg in enumerate(configs):
        if (
            cfg.method == "weighted"
            and cfg.w_lexical == 0
            and (cfg.w_text == 0 if w_image_only else cfg.w_image == 0)
        ):
            return i
    return None


def leaderboard(run: EvalRun) -> list[dict[str, Any]]:
    """Known-item and category results in the Marqo-FashionCLIP leaderboard form: per set,
    the metrics of its task under "image vector only" (text→image, the leaderboard's
    protocol), "text vector only" and the best setting of the grid by the primary metric.
    Names no training product has (:data:`UNSEEN_NAME`) come first: the held-out form."""
    rows: list[dict[str, Any]] = []
    category_sets = [n for n in run.sets if n.startswith(CATEGORY_PREFIX)]
    candidates: list[tuple[str, SetResult | None]] = [
        (name, run.sets.get(name)) for name in (UNSEEN_NAME, KNOWN_ITEM)
    ]
    candidates += [(n, run.sets[n]) for n in category_sets]
    if len(category_sets) > 1:
        candidates.append(("category (all fields)", _pooled(run, category_sets)))
    for name, result in candidates:
        if result is None or not result.query_ids:
            continue
        task = "known-item" if name in (UNSEEN_NAME, KNOWN_ITEM) else "category"
        metrics = _present(run, LEADERBOARD_METRICS[task])
        settings: list[tuple[str, int]] = []
        image_only, text_only = _find(run.configs, True), _find(run.configs, False)
        if image_only is not None:
            settings.append(("image vector only (text→image)", image_only))
        if text_only is not None:
            settings.append(("text vector only", text_only))
        best_index, _ = result.best(run.primary_metric)
        settings.append((f"best: {run.configs[best_index].label}", best_index))
        means = result.means()
        for setting, index in settings:
            rows.append(
                {
                    "set": name,
                    "task": task,
                    "queries": len(result.query_ids),
                    "setting": setting,
                    "config": config_key(run.configs[index]),
                    "metrics": {m: _num(means[index, run.metrics.index(m)]) for m in metrics},
                }
            )
    return rows


def format_leaderboard(run: EvalRun) -> str:
    rows = leaderboard(run)
    if not rows:
        return ""
    out = [
        "Leaderboard form (Marqo-FashionCLIP: known-item R@1, R@10, MRR; category P@1, P@10, MRR):"
    ]
    for task in ("known-item", "category"):
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        metrics = list(task_rows[0]["metrics"])
        body = [
            [r["set"], str(r["queries"]), r["setting"], *(_fmt(r["metrics"][m]) for m in metrics)]
            for r in task_rows
        ]
        out.append(_table(["set", "queries", "setting", *metrics], body))
    return "\n\n".join(out)


# -- shopper photos ---------------------------------------------------------------------------

#: Columns of the shopper-photo table: (query form, metric, column heading).
PHOTO_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("known-item", "hit_rate@1", "hit@1"),
    ("known-item", "hit_rate@10", "hit@10"),
    ("known-item", "mrr@10", "MRR"),
    ("articleType", "precision@10", "type P@10"),
    ("articleType+colour", "precision@10", "type+colour P@10"),
)


def _photo_config(configs: Sequence[FusionConfig]) -> int:
    """The engine's default setting (weighted, equal weights) when the grid has it, else the
    image vector alone, else the first setting."""
    default = FusionConfig()
    for i, cfg in enumerate(configs):
        if (cfg.method, cfg.w_text, cfg.w_image) == (default.method, 0.5, 0.5):
            return i
    found = _find(configs, True)
    return 0 if found is None else found


def photo_rows(run: EvalRun) -> list[dict[str, Any]]:
    """One row per perturbation of the shopper-photo sets (``photo/<perturbation>/<form>``),
    under one setting (:func:`_photo_config`): known-item hit@1, hit@10, MRR and the
    articleType / articleType+colour P@10."""
    index = _photo_config(run.configs)
    perturbations: dict[str, dict[str, SetResult]] = {}
    for name, result in run.sets.items():
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == PHOTO and result.query_ids:
            perturbations.setdefault(parts[1], {})[parts[2]] = result
    rows = []
    for perturbation, forms in perturbations.items():
        values: dict[str, float | None] = {}
        for form, metric, heading in PHOTO_COLUMNS:
            part = forms.get(form)
            if part is not None and metric in run.metrics:
                values[heading] = _num(part.mean_scores(index)[metric])
        known = forms.get("known-item")
        rows.append(
            {
                "perturbation": perturbation,
                "images": len(known.query_ids) if known is not None else 0,
                "config": config_key(run.configs[index]),
                "metrics": values,
            }
        )
    return rows


def format_photo(run: EvalRun) -> str:
    rows = photo_rows(run)
    if not rows:
        return ""
    headings = [h for _, _, h in PHOTO_COLUMNS]
    body = [
        [r["perturbation"], str(r["images"]), *(_fmt(r["metrics"].get(h)) for h in headings)]
        for r in rows
    ]
    label = run.configs[_photo_config(run.configs)].label
    return f"Shopper photos (whole catalog searched; setting {label}):\n" + _table(
        ["perturbation", "images", *headings], body
    )


# -- grid run --------------------------------------------------------------------------------


def format_run(run: EvalRun, metric: str | None = None) -> str:
    """The terminal report: per set, ``metric`` (default: primary) by w_image × method; then
    the best setting per set with the summary metrics; then the leaderboard form."""
    metric = metric or run.primary_metric
    if metric not in run.metrics:
        metric = run.metrics[0]
    out = [
        f"Evaluation of {run.encoder or 'query vectors'} over {run.n_products} products; "
        f"split: {run.split_description}; hubness correction beta {run.hubness:g}",
        f"primary metric: {run.primary_metric}; {len(run.configs)} settings; "
        f"{run.n_searches} searches in {run.seconds:.1f} s",
    ]
    methods = list(dict.fromkeys(_method_label(c, run.configs) for c in run.configs))
    shares = sorted({round(image_share(c), 6) for c in run.configs})
    for result in run.sets.values():
        out.append("")
        out.append(_set_line(result))
        if not result.query_ids:
            continue
        means = result.means()[:, run.metrics.index(metric)]
        cell: dict[tuple[float, str], float] = {}
        for i, cfg in enumerate(run.configs):
            cell.setdefault((round(image_share(cfg), 6), _method_label(cfg, run.configs)), means[i])
        best_value = float(np.nanmax(means))
        body = []
        for share in shares:
            row = [f"{share:g}"]
            for method in methods:
                value = cell.get((share, method), float("nan"))
                row.append(_fmt(value) + (" *" if value == best_value else ""))
            body.append(row)
        out.append(_table([f"w_image ({metric})", *methods], body))
    summary = _present(run, SUMMARY_METRICS) or run.metrics
    body = []
    for result in run.sets.values():
        if not result.query_ids:
            continue
        index, _ = result.best(run.primary_metric)
        means = result.means()[index]
        body.append(
            [
                result.name,
                str(len(result.query_ids)),
                run.configs[index].label,
                *(_fmt(means[run.metrics.index(m)]) for m in summary),
            ]
        )
    if body:
        out += ["", f"Best setting per query set (by {run.primary_metric}):"]
        out.append(_table(["set", "queries", "best setting", *summary], body))
    for extra in (format_leaderboard(run), format_photo(run)):
        if extra:
            out += ["", extra]
    return "\n".join(out) + "\n"


def run_to_json(run: EvalRun) -> dict[str, Any]:
    """Everything in the run but the per-query scores (those go to the CSV)."""
    sets: dict[str, Any] = {}
    for name, result in run.sets.items():
        entry: dict[str, Any] = {
            "queries": len(result.query_ids),
            "skipped": result.skipped,
            "galleries": result.galleries,
        }
        if result.query_ids:
            index, value = result.best(run.primary_metric)
            entry["best"] = {
                "config": config_key(run.configs[index]),
                "label": run.configs[index].label,
                run.primary_metric: _num(value),
            }
            entry["results"] = [
                {
                    "config": config_key(cfg),
                    "means": {m: _num(v) for m, v in result.mean_scores(i).items()},
                }
                for i, cfg in enumerate(run.configs)
            ]
        sets[name] = entry
    return {
        "encoder": run.encoder,
        "hubness": run.hubness,
        "products": run.n_products,
        "split": run.split,
        "split_description": run.split_description,
        "primary_metric": run.primary_metric,
        "ks": run.ks,
        "metrics": run.metrics,
        "configs": [config_key(c) for c in run.configs],
        "searches": run.n_searches,
        "seconds": round(run.seconds, 3),
        "sets": sets,
        "leaderboard": leaderboard(run),
        "photo": photo_rows(run),
    }


def write_per_query_csv(run: EvalRun, path: str | Path) -> Path:
    """One row per (set, query, config): the config and every metric."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        header = ["set", "query_id", "method", "w_text", "w_image", "w_lexical", "rrf_k"]
        writer.writerow([*header, *run.metrics])
        for result in run.sets.values():
            for c, cfg in enumerate(run.configs):
                for q, qid in enumerate(result.query_ids):
                    writer.writerow(
                        [
                            result.name,
                            qid,
                            cfg.method,
                            f"{cfg.w_text:g}",
                            f"{cfg.w_image:g}",
                            f"{cfg.w_lexical:g}",
                            cfg.rrf_k if cfg.method == "rrf" else "",
                            *(f"{v:.6g}" for v in result.scores[c, q]),
                        ]
                    )
    return path


def plot_metric_vs_weight(run: EvalRun, path: str | Path, metric: str | None = None) -> Path:
    """PNG: ``metric`` against w_image, one panel per query set, one line per fusion method
    (all sets on one panel would be unreadable with many sets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric or run.primary_metric
    column = run.metrics.index(metric)
    sets = [r for r in run.sets.values() if r.query_ids]
    n = max(1, len(sets))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.4 * rows), squeeze=False)
    methods = list(dict.fromkeys(_method_label(c, run.configs) for c in run.configs))
    for ax, result in zip(axes.flat, sets, strict=False):
        means = result.means()[:, column]
        for method in methods:
            points = sorted(
                (image_share(cfg), means[i])
                for i, cfg in enumerate(run.configs)
                if _method_label(cfg, run.configs) == method
            )
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, label=method)
        ax.set_title(f"{result.name} (n={len(result.query_ids)})", fontsize=9)
        ax.set_xlabel("w_image (w_text = 1 - w_image)", fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(sets) :]:
        ax.axis("off")
    fig.suptitle(f"{metric} vs image weight — split: {run.split}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: File names written by :func:`write_run_outputs`.
OUTPUT_FILES = {
    "table": "table.txt",
    "json": "results.json",
    "csv": "per_query.csv",
    "png": "metric_vs_weight.png",
}


def write_run_outputs(run: EvalRun, out_dir: str | Path) -> dict[str, Path]:
    """Write the table, JSON, per-query CSV and PNG into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / OUTPUT_FILES["table"]
    table.write_text(format_run(run), encoding="utf-8")
    js = out_dir / OUTPUT_FILES["json"]
    js.write_text(
        json.dumps(run_to_json(run), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return {
        "table": table,
        "json": js,
        "csv": write_per_query_csv(run, out_dir / OUTPUT_FILES["csv"]),
        "png": plot_metric_vs_weight(run, out_dir / OUTPUT_FILES["png"]),
    }


# -- A/B -------------------------------------------------------------------------------------


def format_ab(ab: ABRun, metrics: Sequence[str] | None = None) -> str:
    """Per set: mean of A and B, B − A with its CI, p-value and wins/losses/ties per metric."""
    out = [
        f"A: {ab.a.label}",
        f"B: {ab.b.label}",
        f"split: {ab.run.split_description}",
    ]
    for name, report in ab.reports.items():
        first = next(iter(report.results.values()))
        pct = round(first.confidence * 100)
        names = [m for m in (metrics or report.results) if m in report.results]
        body = [
            [
                m + (" (primary)" if m == report.primary_metric else ""),
                _fmt(r.mean_a),
                _fmt(r.mean_b),
                f"{r.diff:+.4f}",
                f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]",
                f"{r.p_value:.4f}",
                f"{r.wins}/{r.losses}/{r.ties}",
            ]
            for m in names
            for r in (report.results[m],)
        ]
        result = ab.run.sets.get(name)
        out += [
            "",
            _set_line(result) if result is not None else f"{name}: {report.n_queries} queries",
        ]
        out.append(
            _table(["metric", "A", "B", "B-A", f"{pct}% CI", "p", "B wins/losses/ties"], body)
        )
    return "\n".join(out) + "\n"


def ab_to_json(ab: ABRun) -> dict[str, Any]:
    return {
        "a": config_key(ab.a),
        "b": config_key(ab.b),
        "split": ab.run.split,
        "split_description": ab.run.split_description,
        "encoder": ab.run.encoder,
        "sets": {name: report.to_dict() for name, report in ab.reports.items()},
    }


__all__ = [
    "LEADERBOARD_METRICS",
    "OUTPUT_FILES",
    "SUMMARY_METRICS",
    "ab_to_json",
    "format_ab",
    "format_leaderboard",
    "format_run",
    "leaderboard",
    "plot_metric_vs_weight",
    "run_to_json",
    "write_per_query_csv",
    "write_run_outputs",
]
