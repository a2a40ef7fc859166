"""The SLO search over finished trials: Pareto front (accuracy vs batch-1 latency) and the pick.

The paper tuned the CAE by hand until CAE-Net met a latency SLO on the board. Here every
finished trial's architecture is timed after the sweep on this machine (all models
alternating, one process, Ray stopped, as the evaluation stage does) and on every board of
``--boards`` (``suite.edge.pool``); the SLO is decided where ``slo.board`` says (this machine
without it), and the pick is the trial with the best validation accuracy among those that
meet it there; test accuracy is reported beside it but never used to choose. Each board gets
its own Pareto front.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
    board: str = "this machine"  # where the latency columns above were measured: the SLO's board
    boards: dict = field(default_factory=dict)  # board -> its own p50 / p90 / speed-up with intervals, cached, pareto
    extra: dict = field(default_factory=dict)


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Rows no other row beats on both axes (higher val_acc, lower p50), fastest first; rows
    without a latency (a board that failed) are on no front."""
    rows = [r for r in rows if r.p50_ms == r.p50_ms]
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
    """Fill SLO pass/fail and Pareto membership in place (a row without a latency meets nothing)."""
    for r in rows:
        r.meets_slo = r.p50_ms == r.p50_ms and slo.met(r.p50_ms, baseline_ms)
    front = {id(r) for r in pareto_front(rows)}
    for r in rows:
        r.pareto = id(r) in front


def on_board(rows: list[TrialRow], board: str, slo) -> list[TrialRow]:
    """Copies of ``rows`` with ``board``'s latencies in the latency columns, SLO and Pareto marked
    there (the SLO's threshold applied to that board)."""
    out = []
    for r in rows:
        b = r.boards.get(board, {})
        out.append(replace(r, board=board, **{k: b.get(k, float("nan")) for k in LATENCY_FIELDS},
                           latency_cached=bool(b.get("cached"))))
    base = next((r.boards[board].get("baseline_p50_ms") for r in rows if board in r.boards), float("nan"))
    mark(out, slo, base)
    return out


LATENCY_FIELDS = ("p50_ms", "p50_ms_lo", "p50_ms_hi", "p90_ms", "speedup", "speedup_lo", "speedup_hi")


def markdown(rows: list[TrialRow], baseline_ms: float, slo_text: str, chosen: TrialRow | None,
             boards: dict[str, list[TrialRow]] | None = None, failed: dict[str, str] | None = None) -> str:
    keys = sorted({k for r in rows for k in r.params})
    head = ["trial", *keys, "val acc", "test acc", "p50 ms [95%]", "speed-up [95%]", "non-zero params", "SLO", "Pareto"]
    where = rows[0].board if rows else "this machine"
    lines = [f"SLO: {slo_text}; baseline p50 {baseline_ms:.3f} ms on {where}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: r.p50_ms):
        cells = [r.trial + (" **(chosen)**" if r is chosen else "") + (" (cached latency)" if r.latency_cached else "")
                 + (f" (did not converge: {', '.join(sorted(r.extra['not_converged']))})" if r.extra.get("not_converged") else ""), *[str(r.params.get(k, "")) for k in keys],
                 f"{100 * r.val_acc:.2f}%", f"{100 * r.test_acc:.2f}%", interval(vars(r), "p50_ms"),
                 interval(vars(r), "speedup", ".2f", "x"),
                 f"{r.nonzero_parameters:,}", "pass" if r.meets_slo else "fail", "yes" if r.pareto else ""]
        lines.append("| " + " | ".join(cells) + " |")
    for board, board_rows in (boards or {}).items():
        place = board if board == "this machine" else f"board {board}"
        lines += ["", f"on {place} (the SLO's threshold applied there; its own Pareto front):", "",
                  "| trial | p50 ms [95%] | p90 ms | speed-up [95%] | SLO | Pareto | latency from |", "|---|---|---|---|---|---|---|"]
        for r in sorted(board_rows, key=lambda r: (r.p50_ms != r.p50_ms, r.p50_ms)):
            source = ("N/A: " + (failed or {}).get(board, "not measured")) if r.p50_ms != r.p50_ms else \
                ("cache" if r.latency_cached else "measured now")
            lines.append(f"| {r.trial} | {interval(vars(r), 'p50_ms')} | {r.p90_ms:.3f} | {interval(vars(r), 'speedup', '.2f', 'x')} "
                         f"| {'pass' if r.meets_slo else 'fail'} | {'yes' if r.pareto else ''} | {source} |")
    lines.append("")
    lines.append(f"chosen: {chosen.trial} {chosen.params}" if chosen else "chosen: none of the finished trials meets the SLO")
    return "\n".join(lines)


def plot(rows: list[TrialRow], baseline_ms: float, baseline_acc: float | None, slo, path, where: str = "this machine") -> None:
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
    ax.set_xlabel(f"batch-1 latency p50 (ms, {where})")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
