"""The SLO search over finished trials: Pareto front (accuracy vs batch-1 latency) and the pick.

The paper tuned the CAE by hand until CAE-Net met a latency SLO on the board. Here every
finished trial is timed on this machine after the sweep (all models alternating, one
process, Ray stopped, as the evaluation stage does), and the pick is the trial with the best
validation accuracy among those that meet the SLO; test accuracy is reported beside it but
never used to choose.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from suite.plots import save, subplots
from suite.timing import interval


@dataclass
class TrialRow:
    trial: str
    params: dict
    val_acc: float
    test_acc: float
    nonzero_parameters: int
    size_bytes: int
    p50_ms: float = float("nan")
    p50_ms_lo: float = float("nan")  # the p50's 95% interval (suite.timing)
    p50_ms_hi: float = float("nan")
    p90_ms: float = float("nan")
    speedup: float = float("nan")  # paired windows against the baseline's, with their 95% interval
    speedup_lo: float = float("nan")
    speedup_hi: float = float("nan")
    latency_cached: bool = False  # read from the latency cache, not timed in this run
    meets_slo: bool = False
    pareto: bool = False
    extra: dict = field(default_factory=dict)


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Rows no other row beats on both axes (higher val_acc, lower p50), fastest first."""
    front = []
    for r in rows:
        dominated = any(o.val_acc >= r.val_acc and o.p50_ms <= r.p50_ms and (o.val_acc > r.val_acc or o.p50_ms < r.p50_ms)
                        for o in rows)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r.p50_ms)


def choose(rows: list[TrialRow]) -> TrialRow | None:
    """Best validation accuracy among the rows that meet the SLO (ties: the faster one)."""
    ok = [r for r in rows if r.meets_slo]
    return max(ok, key=lambda r: (r.val_acc, -r.p50_ms)) if ok else None


def mark(rows: list[TrialRow], slo, baseline_ms: float) -> None:
    """Fill speed-up, SLO pass/fail and Pareto membership in place."""
    for r in rows:
        r.speedup = baseline_ms / r.p50_ms
        r.meets_slo = slo.met(r.p50_ms, baseline_ms)
    front = {id(r) for r in pareto_front(rows)}
    for r in rows:
        r.pareto = id(r) in front


def markdown(rows: list[TrialRow], baseline_ms: float, slo_text: str, chosen: TrialRow | None) -> str:
    keys = sorted({k for r in rows for k in r.params})
    head = ["trial", *keys, "val acc", "test acc", "p50 ms [95%]", "speed-up [95%]", "non-zero params", "SLO", "Pareto"]
    lines = [f"SLO: {slo_text}; baseline p50 {baseline_ms:.3f} ms", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: r.p50_ms):
        cells = [r.trial + (" **(chosen)**" if r is chosen else "") + (" (cached latency)" if r.latency_cached else "")
                 + (f" (did not converge: {', '.join(sorted(r.extra['not_converged']))})" if r.extra.get("not_converged") else ""), *[str(r.params.get(k, "")) for k in keys],
                 f"{100 * r.val_acc:.2f}%", f"{100 * r.test_acc:.2f}%", interval(vars(r), "p50_ms"),
                 interval(vars(r), "speedup", ".2f", "x"),
                 f"{r.nonzero_parameters:,}", "pass" if r.meets_slo else "fail", "yes" if r.pareto else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"chosen: {chosen.trial} {chosen.params}" if chosen else "chosen: none of the finished trials meets the SLO")
    return "\n".join(lines)


def plot(rows: list[TrialRow], baseline_ms: float, baseline_acc: float | None, slo, path) -> None:
    """Accuracy vs latency, Pareto front joined, SLO line drawn (the paper's Fig. 1 shape)."""
    fig, ax = subplots(figsize=(6.4, 4.4))
    ok = [r for r in rows if r.meets_slo]
    bad = [r for r in rows if not r.meets_slo]
    ax.scatter([r.p50_ms for r in ok], [100 * r.val_acc for r in ok], c="tab:green", label="trial (meets SLO)")
    ax.scatter([r.p50_ms for r in bad], [100 * r.val_acc for r in bad], c="tab:gray", label="trial (misses SLO)")
    front = pareto_front(rows)
    ax.plot([r.p50_ms for r in front], [100 * r.val_acc for r in front], "-", c="tab:blue", lw=1, label="Pareto front")
    if baseline_acc is not None:
        ax.scatter([baseline_ms], [100 * baseline_acc], marker="*", s=160, c="tab:red", label="baseline (test accuracy)")
    limit = slo.latency_ms if slo.latency_ms is not None else (baseline_ms / slo.speedup if slo.speedup else None)
    if limit is not None:
        ax.axvline(limit, ls="--", c="tab:red", lw=1, label=f"SLO ({slo.describe()})")
    for r in rows:
        ax.annotate(r.trial.split("_")[-1], (r.p50_ms, 100 * r.val_acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("batch-1 latency p50 (ms, this machine)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
