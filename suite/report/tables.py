"""``caenet report``: the paper's Tables I / II and Figures 1 and 5 from what was measured.

Rows are a run's models (baseline first); columns: test accuracy, parameters (non-zero),
size, and per board batch-1 latency p50 with the speed-up over the baseline on that board,
energy per inference with its ratio to the baseline (N/A where the board had no power
source), and the SLO verdict. Figure 1 plots latency against accuracy per board with the
SLO line; Figure 5 splits CAE-Net's latency and energy between its encoder and classifier.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from suite.config import ConfigError
from suite.data import load_split
from suite.metrics import describe
from suite.timing import P50
from suite.timing import HIGH, LOW, WINDOW_P50, interval, speedup
from suite.training.convergence import verdict
from suite.plots import save, subplots
from suite.report import intervals
from suite.stages.graph import trained_models

TITLES = {"cifar10": "Table I (CIFAR-10)", "mnist": "Table II (MNIST)"}


def model_rows(cfg, labels: list[str] | None = None) -> dict[str, dict]:
    """Accuracy, parameters and size of the run's models, measured now on the test set."""
    models = trained_models(cfg)
    test = load_split(cfg.data, "test")
    unknown = [label for label in labels or [] if label not in models]
    if unknown:
        raise ConfigError(f"--models: {unknown[0]!r} is not a model of this run; its models: {', '.join(models)}")
    rows = {}
    for label in labels or list(models):
        trained = models[label]
        rows[label] = {"model": trained.model, **describe(trained.load(), test.images, test.labels, cfg.evaluate.batch_size),
                       **convergence_of(trained.stage.metrics)}
    return rows


def convergence_of(stage_metrics: dict) -> dict:
    """``{"convergence": why}`` for a model whose training did not converge (its table row is
    marked), else nothing."""
    why = verdict(stage_metrics)
    return {} if why is None else {"convergence": why}


def build(models: dict[str, dict], edge: list[dict], slo_ms: float | None) -> dict:
    """Merge model rows with edge measurements (``edge_results.json`` summaries) into the table."""
    boards = []
    for result in edge:
        for r in result["rows"]:
            if r["board"] not in boards:
                boards.append(r["board"])
    measured = {(r["board"], r["model"]): r for result in edge for r in result["rows"]}
    table = []
    for label, m in models.items():
        row = {"method": label, **m, "boards": {}}
        for b in boards:
            r, base = measured.get((b, label)), measured.get((b, "baseline"))
            if r is None:
                continue
            cell = {P50: r[P50], P50 + LOW: r.get(P50 + LOW), P50 + HIGH: r.get(P50 + HIGH),
                    "energy_mj": r["energy_mj"], "energy_note": r["energy_note"], "cached": bool(r.get("cached"))}
            if "reference" in r:  # the row its speed-up is against: the baseline at the same precision
                cell["reference"] = r["reference"]
            if r.get("speedup") is not None:  # paired by whoever timed it (a cached entry: with its own baseline windows)
                cell.update({k: r.get(k) for k in ("speedup", "speedup_lo", "speedup_hi")})
            elif base and r.get("reference", "baseline") == "baseline":  # paired windows on the same board, else the p50s' ratio
                pairs = speedup(base.get(WINDOW_P50) or [], r.get(WINDOW_P50) or [])
                cell["speedup"], cell["speedup_lo"], cell["speedup_hi"] = pairs if pairs[0] == pairs[0] else (
                    base[P50] / r[P50], None, None)
                if r["energy_mj"] is not None and base["energy_mj"]:
                    cell["energy_ratio"] = base["energy_mj"] / r["energy_mj"]
            if slo_ms is not None:
                cell["meets_slo"] = r[P50] <= slo_ms
            row["boards"][b] = cell
        table.append(row)
    parts = {}
    for b in boards:
        for label in models:
            enc, cls = measured.get((b, f"{label}.encoder")), measured.get((b, f"{label}.classifier"))
            if enc and cls:
                parts[f"{b}/{label}"] = {"encoder_ms": enc[P50], "classifier_ms": cls[P50],
                                         "encoder_mj": enc["energy_mj"], "classifier_mj": cls["energy_mj"]}
    return {"boards": boards, "rows": table, "components": parts, "slo_ms": slo_ms}


def markdown(report: dict, title: str) -> str:
    paired = any("gap" in row for row in report["rows"])  # caenet compare: accuracy over seeds, gap with its interval
    head = ["Method", "Accuracy" + (" (mean ± std)" if len(report.get("seeds") or []) > 1 else "")]
    head += ["vs baseline, pts [95%]"] if paired else []
    head += ["Params (non-zero)", "Size (KB)"]
    for b in report["boards"]:
        head += [f"{b} p50 ms [95%] (speed-up [95%])", f"{b} energy mJ (ratio)"] + ([f"{b} SLO"] if report["slo_ms"] is not None else [])
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        cells = [row["method"] + (" (did not converge)" if "convergence" in row else ""), _accuracy(row)]
        cells += [_gap(row, row is report["rows"][0])] if paired else []
        cells += [f"{row['parameters']:,} ({row['nonzero_parameters']:,})", f"{row['size_bytes'] / 1024:.1f}"]
        for b in report["boards"]:
            c = row["boards"].get(b)
            if c is None:
                cells += ["-", "-"] + (["-"] if report["slo_ms"] is not None else [])
                continue
            ratio = interval(c, "speedup", ".2f", "x") if c.get("speedup") is not None else "-"
            cells.append(f"{interval(c)} ({ratio})" + (" (cached)" if c.get("cached") else ""))
            cells.append(f"{c['energy_mj']:.3f} ({c['energy_ratio']:.2f}x)" if c.get("energy_ratio") else
                         (f"{c['energy_mj']:.3f}" if c["energy_mj"] is not None else "N/A"))
            if report["slo_ms"] is not None:
                cells.append("pass" if c["meets_slo"] else "fail")
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("size_and_latency"):
        lines.append("")
    for row in report.get("size_and_latency") or []:  # untrained: no accuracy to put in the table
        cells = [f"{b} {interval(c)} ms ({interval(c, 'speedup', '.2f', 'x') if c.get('speedup') is not None else '-'})"
                 for b, c in row["boards"].items()]
        lines.append(f"Size and latency only, untrained: {row['method']}: {row['parameters']:,} parameters, "
                     f"{row['size_bytes'] / 1024:.1f} KB; " + "; ".join(cells))
    notes = sorted({c["energy_note"] for row in report["rows"] for c in row["boards"].values() if c.get("energy_note")})
    unconverged = [f"{row['method']}: {row['convergence']}" for row in report["rows"] if "convergence" in row]
    if unconverged:  # no comparison with a model that did not learn goes unmarked
        lines += [""] + [f"WARNING: did not converge: {u}" for u in unconverged]
    if notes:
        lines += [""] + [f"Energy: {n}" for n in notes]
    if report.get("notes"):  # boards that failed, models a board could not run
        lines += [""] + report["notes"]
    if report["slo_ms"] is not None:
        lines.append(f"SLO: batch-1 p50 <= {report['slo_ms']:g} ms on each board.")
    return "\n".join(lines)


def _accuracy(row: dict) -> str:
    std = row.get("test_acc_std")
    return f"{100 * row['test_acc']:.2f}" + (f" ± {100 * std:.2f}%" if std is not None else "%")


def _gap(row: dict, baseline: bool) -> str:
    return "-" if baseline else intervals.gap_text(row)


def write_csv(report: dict, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "board", "test_acc", "test_acc_std", "test_acc_lo", "test_acc_hi", "gap", "gap_lo", "gap_hi", "parameters", "nonzero_parameters", "size_bytes", P50, P50 + LOW, P50 + HIGH,
                    "speedup", "speedup_lo", "speedup_hi", "energy_mj", "energy_ratio", "meets_slo"])
        for row in report["rows"]:
            for b, c in row["boards"].items() or {"": {}}.items():
                w.writerow([row["method"], b, row["test_acc"], *(row.get(k) for k in ("test_acc_std", "test_acc_lo", "test_acc_hi",
                                                                                    "gap", "gap_lo", "gap_hi")), row["parameters"], row["nonzero_parameters"], row["size_bytes"],
                            c.get(P50), c.get(P50 + LOW), c.get(P50 + HIGH), c.get("speedup"), c.get("speedup_lo"),
                            c.get("speedup_hi"), c.get("energy_mj"), c.get("energy_ratio"), c.get("meets_slo")])


def figure1(report: dict, path: Path) -> None:
    """Latency vs accuracy per board, the SLO as a vertical line (the paper's Fig. 1)."""
    fig, ax = subplots(figsize=(6.4, 4.4))
    markers = "os^Dv<>"
    for i, b in enumerate(report["boards"]):
        pts = [(row["boards"][b][P50], 100 * row["test_acc"], row["method"]) for row in report["rows"] if b in row["boards"]]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)], label=b)
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if report["slo_ms"] is not None:
        ax.axvline(report["slo_ms"], ls="--", c="tab:red", lw=1, label=f"SLO {report['slo_ms']:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency p50 (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def figure5(report: dict, path: Path) -> bool:
    """Encoder vs classifier share of CAE-Net's latency (and energy where measured); False if nothing to draw."""
    parts = report["components"]
    if not parts:
        return False
    names = list(parts)
    fig, axes = subplots(1, 2, figsize=(9, 0.6 * len(names) + 2.2), squeeze=False)
    for ax, (kind, unit) in zip(axes[0], (("ms", "latency"), ("mj", "energy"))):
        enc = [parts[n][f"encoder_{kind}"] for n in names]
        cls = [parts[n][f"classifier_{kind}"] for n in names]
        ok = [e is not None and c is not None for e, c in zip(enc, cls)]
        shares = [100 * e / (e + c) if o else 0 for e, c, o in zip(enc, cls, ok)]
        ax.barh(names, shares, color="tab:blue", label="encoder")
        ax.barh(names, [100 - s if o else 0 for s, o in zip(shares, ok)], left=shares, color="tab:orange", label="classifier")
        for y, o in enumerate(ok):
            if not o:
                ax.text(50, y, "N/A (no power source)", ha="center", va="center", fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"share of CAE-Net {unit} (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
    return True


def latest_edge_results(folder: Path) -> list[dict]:
    """The newest ``edge_results.json`` per board set under ``folder`` (one per bench run)."""
    found = sorted(folder.glob("*/edge_results.json"))
    return [json.loads(p.read_text()) for p in found[-1:]]
