"""Accuracy over seeds, its interval and the gap to the baseline, the accuracy-latency front
and the headline row of ``caenet compare``.

- A row's accuracy interval: over two or more seeds, the 95% t-interval of the seeds' test
  accuracies; at one seed, the 95% Wilson interval of the test images it got right (the test
  set's sampling is then the only noise that can be put a number on).
- Its gap to the baseline is paired: each seed's accuracy minus the baseline's at that seed,
  with the 95% t-interval of those differences (a seed that helps both rows cancels out).
- The front: the rows no other row beats on both latency (lower p50) and accuracy (higher mean).
- The fastest at parity: the fastest row whose accuracy interval overlaps or beats the baseline's.
- The like-for-like pairs (``like_for_like``): the shipped CAE-Net against the baseline on each
  runtime at each precision (float against float, int8 against the baseline's int8), and each
  on its fastest form here: what the README's headline states.
"""

from __future__ import annotations

import math

import numpy as np

from suite.timing import P50
from suite.plots import save, subplots
from suite.timing import HIGH, LOW, Z95, t_interval


def wilson(accuracy: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``accuracy`` measured on ``n`` items."""
    if n <= 0:
        return float("nan"), float("nan")
    z2 = Z95 * Z95
    centre = (accuracy + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(by_seed: dict[int, float], n_test: int) -> dict:
    """Mean, sample std and 95% interval of one row's test accuracies (seed -> accuracy);
    ``how`` says which interval it is."""
    values = list(by_seed.values())
    mean, low, high = t_interval(values)
    if len(values) >= 2:  # an accuracy stays within [0, 1] whatever the spread of a few seeds
        std, how = float(np.std(values, ddof=1)), f"t over {len(values)} seeds"
        low, high = max(0.0, low), min(1.0, high)
    else:
        (low, high), std, how = wilson(mean, n_test), None, f"Wilson over {n_test} test images"
    return {"test_acc": mean, "test_acc_std": std, "test_acc_lo": low, "test_acc_hi": high, "test_acc_interval": how,
            "test_acc_by_seed": {str(s): v for s, v in by_seed.items()}}


def paired_gap(by_seed: dict[int, float], baseline_by_seed: dict[int, float]) -> dict:
    """The row's accuracy minus the baseline's at the same seed: mean, 95% t-interval over the
    seeds (NaN bounds at one seed), and the verdict it supports."""
    diffs = [by_seed[s] - baseline_by_seed[s] for s in by_seed if s in baseline_by_seed]
    gap, low, high = t_interval(diffs)
    return {"gap": gap, "gap_lo": low, "gap_hi": high, "verdict": verdict(low, high)}


def verdict(low: float, high: float) -> str:
    """What a gap's 95% interval says: above 0, below 0, or either way at these seeds."""
    if low != low or high != high:
        return "one seed: no interval"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no difference at these seeds"


def front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated (latency, accuracy) points: none other is at least as fast
    and at least as accurate, and strictly better on one of them."""
    out = []
    for i, (lat, acc) in enumerate(points):
        if not any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, (l2, a2) in enumerate(points) if j != i):
            out.append(i)
    return out


def _latency(row: dict, board: str) -> dict | None:
    cell = row["boards"].get(board)
    return cell if cell and cell.get(P50) is not None and cell[P50] == cell[P50] else None


def headline(rows: list[dict], board: str) -> dict | None:
    """The fastest row on ``board`` (by p50) whose accuracy interval reaches the baseline's
    (its upper end at or above the baseline's lower end); None when no row beside the
    baseline does. ``rows`` are a report's, the baseline first."""
    base = rows[0]
    # a row with no speed-up on the board (the baseline's int8: a reference itself) is no headline
    fits = [r for r in rows[1:] if _latency(r, board) and r["boards"][board].get("speedup") is not None
            and r["test_acc_hi"] >= base["test_acc_lo"]]
    if not fits:
        return None
    best = min(fits, key=lambda r: r["boards"][board][P50])
    cell = best["boards"][board]
    return {"method": best["method"], "board": board, P50: cell[P50], "speedup": cell.get("speedup"),
            "speedup_lo": cell.get("speedup_lo"), "speedup_hi": cell.get("speedup_hi"),
            **{k: best[k] for k in ("test_acc", "test_acc_lo", "test_acc_hi", "gap", "gap_lo", "gap_hi", "verdict")},
            "baseline_acc": base["test_acc"], "baseline_acc_lo": base["test_acc_lo"], "baseline_acc_hi": base["test_acc_hi"]}


RUNTIMES = {"pytorch": "PyTorch", "torch": "PyTorch (TorchScript)", "onnxruntime": "onnxruntime"}


def _cell_speedup(reference: dict, cell: dict) -> dict:
    """The ratio of two p50s timed apart (on different runtimes or boards), with the interval
    their own 95% intervals bound it by (lowest over highest, highest over lowest)."""
    lo = reference.get(P50 + LOW, reference[P50]) / cell.get(P50 + HIGH, cell[P50])
    hi = reference.get(P50 + HIGH, reference[P50]) / cell.get(P50 + LOW, cell[P50])
    return {"speedup": reference[P50] / cell[P50], "speedup_lo": lo, "speedup_hi": hi}


def _pair(report: dict, row: dict, ref: dict, precision: str, board: str, ref_board: str, speed: dict) -> dict:
    runtimes = {b: RUNTIMES.get(r, b) for b, r in (report.get("runtimes") or {}).items()}
    by_seed = row.get("test_acc_by_seed", {})
    gap = paired_gap(by_seed, ref.get("test_acc_by_seed", {})) if by_seed else {}
    return {"method": row["method"], "reference": ref["method"], "precision": precision, "board": board,
            "runtime": runtimes.get(board, board), "reference_board": ref_board,
            "reference_runtime": runtimes.get(ref_board, ref_board),
            P50: row["boards"][board][P50], "reference_p50_ms": ref["boards"][ref_board][P50], **speed, **gap,
            **{k: row.get(k) for k in ("test_acc", "test_acc_lo", "test_acc_hi", "size_bytes")},
            "reference_acc": ref.get("test_acc"), "reference_size_bytes": ref.get("size_bytes"),
            "reference_precision": ref.get("precision"), "row_precision": row.get("precision")}


def like_for_like(report: dict, method: str = "CAE-Net") -> list[dict]:
    """``method`` (the shipped CAE-Net) against the baseline, like for like: on each board
    (runtime) where both ran, float against the float baseline and, where both have an int8 row
    (``quantizes``), int8 against the baseline's int8, each speed-up paired by alternating
    windows; then each on its fastest form here (any runtime, any precision), stated as such,
    whose speed-up is the ratio of p50s timed apart (``_cell_speedup``)."""
    rows = {r["method"]: r for r in report["rows"]}
    if method not in rows or not report["rows"]:
        return []
    base = report["rows"][0]
    int8 = {r["quantizes"]: r["method"] for r in report["rows"] if r.get("quantizes")}
    out = []
    for precision, row, ref in (("fp32", rows[method], base), ("int8", rows.get(int8.get(method)), rows.get(int8.get(base["method"])))):
        for b in report["boards"] if row and ref else []:
            cell = _latency(row, b)
            if cell and _latency(ref, b) and cell.get("reference") == ref["method"] and cell.get("speedup") is not None:
                out.append(_pair(report, row, ref, precision, b, b, {k: cell.get(k) for k in ("speedup", "speedup_lo", "speedup_hi")}))

    def fastest(r: dict) -> tuple[dict, str] | None:
        forms = [(x, b) for x in (r, rows.get(int8.get(r["method"]))) if x for b in report["boards"] if _latency(x, b)]
        return min(forms, key=lambda f: f[0]["boards"][f[1]][P50]) if forms else None

    mine, theirs = fastest(rows[method]), fastest(base)
    if mine and theirs:
        (row, b), (ref, rb) = mine, theirs
        out.append(_pair(report, row, ref, "fastest form here", b, rb, _cell_speedup(ref["boards"][rb], row["boards"][b])))
    return out


def mixed_pairs(report: dict) -> list[str]:
    """Each speed-up of ``report`` that is not like for like, in one line each: a board cell whose
    reference is not a row, is of another precision or was not timed on that board, and a
    like-for-like pair across precisions or boards. Empty when every speed-up compares two models
    on one runtime at one precision (the "fastest form here" pair states that it does not)."""
    rows = {r["method"]: r for r in report["rows"]}
    bad = []
    for r in report["rows"]:
        for b, cell in r["boards"].items():
            if cell.get("speedup") is None or cell.get("reference") == r["method"]:
                continue
            ref = rows.get(cell.get("reference"))
            if ref is None:
                bad.append(f"{r['method']} on {b}: a speed-up against {cell.get('reference')!r}, which is not a row")
            elif ref.get("precision") != r.get("precision") or r.get("precision") is None:
                bad.append(f"{r['method']} ({r.get('precision')}) on {b}: a speed-up against {ref['method']} ({ref.get('precision')})")
            elif b not in ref["boards"]:
                bad.append(f"{r['method']} on {b}: a speed-up against {ref['method']}, which was not timed there")
    for p in report.get("pairs") or []:
        if p["precision"] != "fastest form here" and (p["board"] != p["reference_board"] or
                                                     not p["row_precision"] == p["reference_precision"] == p["precision"]):
            bad.append(f"pair {p['method']} vs {p['reference']}: {p['row_precision']} on {p['board']} against "
                       f"{p['reference_precision']} on {p['reference_board']}")
    return bad


def pair_line(p: dict) -> str:
    """One like-for-like pair in one Markdown sentence (the compare table's foot, the README)."""
    if p["precision"] == "fastest form here":
        what = (f"fastest form here: **{p['method']}** on {p['runtime']} against **{p['reference']}** on "
                f"{p['reference_runtime']}")
    else:
        what = f"{p['precision']} on {p['runtime']}: **{p['method']}** against **{p['reference']}**"
    speed = interval_text(p["speedup"], p.get("speedup_lo"), p.get("speedup_hi"), "x")
    gap = gap_text(p, " points", ": ") if "gap" in p else "no accuracy gap"
    return (f"{what}: **{speed}** faster (p50 {p[P50]:.3g} vs {p['reference_p50_ms']:.3g} ms), "
            f"{_megabytes(p.get('size_bytes'))} vs {_megabytes(p.get('reference_size_bytes'))}; accuracy "
            f"{100 * p['test_acc']:.2f}% vs {100 * p['reference_acc']:.2f}%, {gap}.")


def _megabytes(n) -> str:
    return "n/a" if n is None else f"{n / 1e6:.3g} MB"


def _known(x) -> bool:
    return x is not None and x == x  # None and NaN: no interval (one seed, one window)


def interval_text(value: float, low=None, high=None, unit: str = "") -> str:
    """A value with its 95% interval, three digits, as the published tables print a p50 or (unit
    "x") a speed-up: ``32.5x [31.1, 34]``; the value alone when there is no interval."""
    return f"{value:.3g}{unit}" + (f" [{low:.3g}, {high:.3g}]" if _known(low) else "")


def gap_text(row: dict, unit: str = "", sep: str = " ") -> str:
    """A row's paired gap to the baseline in points, with its 95% interval and verdict, as every
    table prints it: ``+0.56 [-1.58, +2.69] no difference at these seeds`` (``(one seed)``
    when there is no interval)."""
    gap = f"{100 * row['gap']:+.2f}{unit}"
    if not _known(row.get("gap_lo")):
        return f"{gap} (one seed)"
    return f"{gap} [{100 * row['gap_lo']:+.2f}, {100 * row['gap_hi']:+.2f}]{sep}{row['verdict']}"


def headline_line(h: dict | None, baseline: str, board: str | None = None) -> str:
    """The headline (``headline``) in one Markdown sentence: the compare table's last line, the
    README's results (scripts/results_tables.py) and the MLflow tag all print this."""
    if h is None:
        return f"no model's accuracy interval reaches {baseline}'s" + (f" on {board}." if board else ".")
    return (f"**{h['method']}** is the fastest model whose accuracy interval ({100 * h['test_acc_lo']:.2f}-"
            f"{100 * h['test_acc_hi']:.2f}%) reaches {baseline}'s ({100 * h['baseline_acc_lo']:.2f}-"
            f"{100 * h['baseline_acc_hi']:.2f}%): **{interval_text(h['speedup'], h.get('speedup_lo'), h.get('speedup_hi'), 'x')}** "
            f"faster on {h['board']} (p50 {h[P50]:.3g} ms); its accuracy gap, {gap_text(h, ' points', ': ')}.")


def front_plot(report: dict, path, title: str) -> None:
    """Every row on every board of the report as a point with error bars both ways (p50's 95%
    interval, the accuracy's), one marker per board (runtime); the front of non-dominated points
    over all of them joined, the baseline's accuracy band and each board's headline (red) marked.
    Left: every point; right: the band around the baseline's accuracy, where the front and the
    headline are, each point named."""
    points, where = [], []
    for b in report["boards"]:
        for i, r in enumerate(report["rows"]):
            if _latency(r, b):
                points.append((r["boards"][b][P50], 100 * r["test_acc"]))
                where.append((b, i))
    on_front = set(front(points))
    heads = {b: (h or {}).get("method") for b, h in (report.get("headlines") or {}).items()}
    markers = dict(zip(report["boards"], "os^Dv<>"))
    base = report["rows"][0] if report["rows"] else None
    near = (100 * base["test_acc_lo"] - 6.0) if base else 0.0  # the zoom: from 6 points under the baseline's band
    fig, axes = subplots(1, 2, figsize=(15.0, 6.0), squeeze=False)
    for panel, ax in enumerate(axes[0]):
        for k, ((b, i), (x, y)) in enumerate(zip(where, points)):
            r, cell = report["rows"][i], report["rows"][i]["boards"][b]
            if panel == 1 and y < near:
                continue
            xerr = [[x - (cell.get(P50 + LOW) or x)], [(cell.get(P50 + HIGH) or x) - x]]
            yerr = [[y - 100 * r["test_acc_lo"]], [100 * r["test_acc_hi"] - y]]
            colour = "tab:orange" if i == 0 else "tab:red" if heads.get(b) == r["method"] else "tab:blue" if k in on_front else "grey"
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=markers[b], color=colour, capsize=2, markersize=5,
                        markerfacecolor=colour if k in on_front or i == 0 else "white")
            if (panel == 1) == (y >= near):  # each point named once: in the zoom when it is there
                name = r["method"] + ("" if len(report["boards"]) == 1 else f" [{b}]")
                ax.annotate(name, (x, y), fontsize=6.5, xytext=(4, 3 if k % 2 else -8), textcoords="offset points")
        ordered = sorted(on_front, key=lambda k: points[k][0])
        ax.plot([points[k][0] for k in ordered], [points[k][1] for k in ordered], "--", color="tab:blue", lw=1, label="front")
        if base:
            ax.axhspan(100 * base["test_acc_lo"], 100 * base["test_acc_hi"], color="tab:orange", alpha=0.12,
                       label=f"{base['method']}: accuracy interval")
        if report.get("slo_ms") is not None:
            ax.axvline(report["slo_ms"], ls=":", c="tab:red", lw=1, label=f"SLO {report['slo_ms']:g} ms")
        ax.set_xscale("log")
        ax.set_xlabel("batch-1 latency p50 (ms), 95% interval")
        ax.grid(alpha=0.3)
    for b in report["boards"]:
        axes[0][0].plot([], [], markers[b], color="black", markerfacecolor="white", label=f"{b}")
    axes[0][0].set_ylabel(f"test accuracy (%), {base.get('test_acc_interval', '') if base else ''}")
    axes[0][0].set_title("every model", fontsize=9)
    axes[0][1].set_title(f"near the baseline's accuracy (from {near:.0f}%); red: the fastest model whose accuracy "
                         "interval reaches the baseline's", fontsize=9)
    axes[0][0].legend(fontsize=7, loc="best")
    axes[0][1].set_ylim(bottom=near)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)
