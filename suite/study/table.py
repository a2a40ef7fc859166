"""A study's table: per variant, mean ± std over its seeds, as Markdown, Parquet and a bar plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from suite.plots import save, subplots
from suite.report.intervals import verdict
from suite.timing import t_interval

# cell column -> (column title, scale for display, digits)
COLUMNS = {
    "caenet_test_acc": ("CAE-Net acc (%)", 100, 2),
    "delta_acc": ("vs baseline (pts)", 100, 2),
    "baseline_test_acc": ("baseline acc (%)", 100, 2),
    "reconstruction_mse": ("CAE val MSE", 1, 4),
    "caenet_p50_ms": ("p50 (ms)", 1, 3),
    "speedup": ("speed-up", 1, 2),
}


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample std of the values given (None and NaN left out); (None, None) for none."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None  # sample std; one seed has none
    return float(np.mean(values)), std


def aggregate(study, rows: list[dict], same_cae: dict[str, bool]) -> dict:
    """Per variant (in the file's order): mean and std of every column, the seeds that finished,
    the errors of those that did not."""
    variants = []
    for variant in study.variants:
        mine = [r for r in rows if r["variant"] == variant.name]
        done = [r for r in mine if "error" not in r]
        entry = {"name": variant.name, "set": variant.set, "note": variant.note, "seeds": [r["seed"] for r in done],
                 "errors": {r["seed"]: r["error"] for r in mine if "error" in r},
                 "same_cae_as_reference": same_cae.get(variant.name, False),
                 "not_converged": {r["seed"]: r["not_converged"] for r in done if r.get("not_converged")}}
        for column in COLUMNS:
            entry[f"{column}_mean"], entry[f"{column}_std"] = mean_std([r.get(column) for r in done])
        # the gap to the baseline is paired already (each seed's CAE-Net minus that seed's baseline)
        _, entry["delta_acc_lo"], entry["delta_acc_hi"] = t_interval([r.get("delta_acc") for r in done])
        entry["verdict"] = verdict(entry["delta_acc_lo"], entry["delta_acc_hi"])
        variants.append(entry)
    return {"reference": study.reference, "note": study.note, "variants": variants}


def _cell(mean, std, scale, digits) -> str:
    if mean is None:
        return "n/a"
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def _unconverged(by_seed: dict, but: str) -> str:
    """``{seed: [stage, ...]}`` as "caenet at seed 2; autoencoder at seeds 0, 1" (stage ``but`` left out)."""
    seeds_of: dict[str, list[int]] = {}
    for seed, stages in sorted(by_seed.items(), key=lambda kv: int(kv[0])):
        for stage in stages:
            if stage != but:
                seeds_of.setdefault(stage, []).append(int(seed))
    return "; ".join(f"{stage} at seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}" for stage, s in seeds_of.items())


def markdown(summary: dict) -> str:
    """The table: one row per variant, mean ± std over its seeds."""
    head = ["variant", *(title for title, _, _ in COLUMNS.values()), "gap [95%]", "vs baseline", "seeds", "what it changes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in summary["variants"]:
        unconverged = _unconverged(v.get("not_converged") or {}, but="baseline")  # the baseline's: under the table
        cells = [v["name"] + (f" (did not converge: {unconverged})" if unconverged else "")]
        for column, (_, scale, digits) in COLUMNS.items():
            if column == "reconstruction_mse" and v["same_cae_as_reference"]:
                cells.append(f"same CAE as {summary['reference']}")
            else:
                cells.append(_cell(v[f"{column}_mean"], v[f"{column}_std"], scale, digits))
        low, high = v.get("delta_acc_lo"), v.get("delta_acc_hi")
        cells.append(f"[{100 * low:+.2f}, {100 * high:+.2f}]" if low is not None and low == low else "n/a")
        cells.append(v.get("verdict", ""))
        seeds = str(len(v["seeds"])) + (f" ({len(v['errors'])} failed)" if v["errors"] else "")
        cells += [seeds, v["note"] or ", ".join(v["set"]) or "the base config"]
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines)
    extra = [f"{summary.get('dataset', '')} study '{summary.get('name', '')}': mean ± sample std over seeds "
             f"{summary.get('seeds')}{', smoke scale' if summary.get('smoke') else ''}; accuracies on the test split, "
             "latency at batch 1 on this machine. Gap: each seed's CAE-Net minus that seed's baseline, its 95% t-interval "
             "over the seeds; 'better' / 'worse' when the interval excludes 0."]
    if summary.get("note"):
        extra.append(summary["note"])
    base = sorted({int(seed) for v in summary["variants"] for seed, stages in (v.get("not_converged") or {}).items()
                   if "baseline" in stages})  # one baseline per seed, shared by every variant
    if base:
        extra.append(f"The baseline did not converge at seed{'s' if len(base) > 1 else ''} {', '.join(map(str, base))} (each "
                     "cell's baseline run in MLflow says why): every gap is to that baseline.")
    if summary.get("wall_seconds") is not None:
        extra.append(f"Wall time {summary['wall_seconds'] / 60:.1f} min ({summary['train_seconds'] / 60:.1f} min training, "
                     f"the rest evaluating) on {summary.get('cpus')} CPU cores; stages another run had cached count as free.")
    for v in summary["variants"]:
        for seed, error in v["errors"].items():
            extra.append(f"{v['name']} seed {seed} failed: {error}")
    return out + "\n\n" + "\n".join(extra)


def write_cells(rows: list[dict], path: Path) -> None:
    """One row per cell (variant, seed) with its numbers; errors as text."""
    columns = ["variant", "seed", *COLUMNS, "caenet_parameters", "baseline_p50_ms", "k_mean", "mlflow_run_id", "error"]
    table = {c: [r.get(c) for r in rows] for c in columns}
    pq.write_table(pa.table(table), path)


def _far_below(means: np.ndarray) -> np.ndarray:
    """The variants far below the rest (under Q1 - 3 IQR, and over a point under Q1): drawn
    clipped, so that a collapse (frozen random weights: -49 points) does not squash the tenths
    that separate the others."""
    q1, q3 = np.percentile(means, [25, 75])
    return means < min(q1 - 3 * (q3 - q1), q1 - 1.0)


def plot(summary: dict, path: Path) -> None:
    """Each variant's CAE-Net test accuracy minus its baseline's (same seeds), in points: the
    mean as a bar, the std over seeds as an error bar, 0 = the baseline. A variant far below
    the rest (``_far_below``) is clipped at the axis with its value written there."""
    variants = [v for v in summary["variants"] if v["delta_acc_mean"] is not None]
    fig, ax = subplots(figsize=(8, 0.38 * max(len(variants), 2) + 1.6))
    names = [v["name"] for v in variants]
    means = np.array([100 * v["delta_acc_mean"] for v in variants])
    errors = np.array([100 * (v["delta_acc_std"] or 0.0) for v in variants])
    y = np.arange(len(variants))[::-1]
    if len(means):
        near = ~_far_below(means)
        low = float(min((means - errors)[near].min(), 0.0))
        high = float(max((means + errors)[near].max(), 0.0))
        pad = 0.08 * (high - low) + 0.05
        low, high = low - pad, high + pad
        colours = ["tab:orange" if n == summary["reference"] else "tab:blue" for n in names]
        ax.barh(y, np.maximum(means, low), xerr=np.where(near, errors, 0.0), color=colours, capsize=3, alpha=0.85)
        for yi, mean, err, ok in zip(y, means, errors, near):
            text = f"{mean:+.2f} ± {err:.2f}"
            if ok:
                ax.text(max(mean + err, 0.0) + 0.01 * (high - low), yi, text, va="center", fontsize=8)
            else:
                ax.text(low + 0.01 * (high - low), yi, f"← {text}", va="center", fontsize=8, color="white", weight="bold")
        ax.set_xlim(low, high + 0.25 * (high - low))
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(y, names)
    base = [100 * v["baseline_test_acc_mean"] for v in variants if v["baseline_test_acc_mean"] is not None]
    where = f" (baseline {np.mean(base):.2f}%)" if base else ""
    ax.set_xlabel("CAE-Net test accuracy minus the baseline's (points), mean ± std over seeds")
    ax.set_title(f"{summary.get('dataset', '')} study '{summary.get('name', 'study')}', {len(summary.get('seeds') or [])} seeds"
                 f"{where}; orange: {summary['reference']}", fontsize=10)
    fig.tight_layout()
    save(fig, path)
