"""One batch-1 timing protocol for every latency the suite reports, after MLPerf's single-stream
rules: the evaluate stage, the sweep's timing pass, the methods that time themselves
(``slo_prune``, SubFlow, AdaDeep), ``caenet compare``, ``caenet edge bench`` on the boards and
``benchmarks/latency.py`` all time through ``measure`` and report through ``summarize``.

- Warm-up calls first, outside every window.
- Then timed windows, alternating between the models (model A's window, B's, A's, ...), so a
  burst of load elsewhere slows every model alike. A window holds at least ``window_queries``
  calls and lasts at least ``window_seconds``.
- At least ``windows`` windows per model; more, up to ``max_windows``, until every model's p50
  is known to within ``ci_share`` of itself (the 95% interval's half-width): an early stop.
- p50 / p90 / p99 each with a 95% distribution-free interval (order statistics: the ranks that
  a binomial count of samples below the true quantile reaches with 95% probability).
- A speed-up is the geometric mean of the paired windows' p50 ratios (model B's window right
  after model A's), its interval a t-interval over their logarithms.

Standard library and numpy only: ``caenet edge bench`` copies this file to the boards, where
the runner times with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np

P50, P90, P99, MEAN = "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms"  # batch-1, ms
LOW, HIGH = "_lo", "_hi"  # suffixes of a statistic's 95% interval: latency_p50_ms_lo, latency_p50_ms_hi
WINDOW_P50 = "window_p50_ms"  # each window's p50, in the order they ran (the pairs of a speed-up)
# whether every p50's interval got within ci_share before max_windows (not a training's convergence)
SETTLED = "ci_share_met"
Z95 = 1.959964
# two-sided 95% quantiles of Student's t by degrees of freedom (no scipy on a board)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


@dataclass
class Protocol:
    """How long to time. The defaults give 5 x 60 = 300 timed calls per model at least."""

    warmup: int = 20  # calls per model before any window
    windows: int = 5  # timed windows per model, at least
    window_queries: int = 60  # calls per window, at least ...
    window_seconds: float = 0.0  # ... and at least this long (a power meter needs seconds)
    max_windows: int = 20  # at most, while an interval is still wider than ci_share allows
    ci_share: float = 0.02  # early stop: every p50's 95% half-width under this share of the p50 (0: never)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, settings) -> "Protocol":
        """The protocol a config section states (``evaluate.latency``, a boards file's ``bench``):
        the fields of the same names."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


def _t95(df: int) -> float:
    if df <= 0:
        return float("inf")
    known = [d for d in sorted(_T95) if d <= df]
    return _T95[known[-1]] if df < 120 else Z95


def quantile_ci(samples, q: float) -> tuple[float, float, float]:
    """(estimate, low, high) of quantile ``q`` of ``samples`` with a 95% distribution-free
    interval: order statistics at the ranks the binomial count of samples below the true
    quantile reaches with 95% probability (normal approximation, clamped to the sample)."""
    xs = np.sort(np.asarray(samples, dtype=float))
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    spread = Z95 * math.sqrt(n * q * (1 - q))
    low = min(n - 1, max(0, int(math.floor(n * q - spread)) - 1))  # 0-based index of rank floor(nq - z sd)
    high = min(n - 1, max(0, int(math.ceil(n * q + spread)) - 1))  # of rank ceil(nq + z sd)
    return float(np.percentile(xs, 100 * q)), float(xs[low]), float(xs[high])


def summarize(windows: list) -> dict:
    """Every statistic of one model's windows (lists of call times in ms): p50 / p90 / p99 with
    their intervals, the mean, each window's p50, and how many windows and calls."""
    ms = np.concatenate([np.asarray(w, dtype=float) for w in windows]) if windows else np.array([])
    out: dict = {}
    for name, q in ((P50, 0.5), (P90, 0.9), (P99, 0.99)):
        out[name], out[name + LOW], out[name + HIGH] = quantile_ci(ms, q)
    out[MEAN] = float(ms.mean()) if len(ms) else float("nan")
    out[WINDOW_P50] = [float(np.percentile(w, 50)) for w in windows if len(w)]
    out["windows"], out["queries"] = len(windows), int(len(ms))
    return out


def half_width_share(stats: dict) -> float:
    """The p50 interval's half-width as a share of the p50."""
    return (stats[P50 + HIGH] - stats[P50 + LOW]) / 2 / stats[P50] if stats[P50] > 0 else float("inf")


def speedup(base_window_p50: list, model_window_p50: list) -> tuple[float, float, float]:
    """(ratio, low, high): how many times faster the model is than the base, from windows that
    ran in pairs (same index = neighbouring windows); geometric mean with a 95% t-interval."""
    pairs = [(b, m) for b, m in zip(base_window_p50, model_window_p50) if b > 0 and m > 0]
    if not pairs:
        return float("nan"), float("nan"), float("nan")
    mean, low, high = t_interval(np.log([b / m for b, m in pairs]))
    return math.exp(mean), math.exp(low), math.exp(high)


def t_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` with its 95% Student-t interval (NaN bounds for
    fewer than two values). A paired comparison passes the per-pair differences."""
    xs = np.asarray([v for v in values if v is not None and v == v], dtype=float)
    if len(xs) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(xs.mean())
    if len(xs) < 2:
        return mean, float("nan"), float("nan")
    half = _t95(len(xs) - 1) * float(xs.std(ddof=1)) / math.sqrt(len(xs))
    return mean, mean - half, mean + half


def measure(calls: dict[str, Callable[[int], object]], protocol: Protocol,
            on_window: Callable[[str, int, float, float, int], None] | None = None,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """Time ``calls`` (name -> a function of the call's index that runs one batch-1 inference)
    under ``protocol``; returns ``summarize`` of each, plus whether the early stop was reached
    (``SETTLED``). ``on_window(name, index, start, end, calls)`` hears of each window, in wall
    time (energy is read over the same windows)."""
    for call in calls.values():
        for i in range(protocol.warmup):
            call(i)
    latencies: dict[str, list] = {name: [] for name in calls}
    done = {name: 0 for name in calls}
    settled = False
    for index in range(max(protocol.windows, protocol.max_windows)):
        for name, call in calls.items():
            window, begin, wall = [], clock(), time.time()
            while len(window) < protocol.window_queries or clock() - begin < protocol.window_seconds:
                t = clock()
                call(done[name])
                window.append((clock() - t) * 1e3)
                done[name] += 1
            latencies[name].append(window)
            if on_window is not None:
                on_window(name, index, wall, time.time(), len(window))
        if index + 1 >= protocol.windows:
            stats = {name: summarize(w) for name, w in latencies.items()}
            settled = protocol.ci_share > 0 and all(half_width_share(s) <= protocol.ci_share for s in stats.values())
            if settled or index + 1 >= protocol.max_windows:
                break
    return {name: {**summarize(w), SETTLED: settled} for name, w in latencies.items()}


def interval(stats: dict, key: str = P50, fmt: str = ".3f", unit: str = "") -> str:
    """``0.421 [0.418, 0.425]`` (``unit`` "x": ``1.15x [1.10, 1.21]``): the statistic ``key`` of
    ``stats`` with its 95% interval (``key`` + ``_lo`` / ``_hi``), for tables; n/a when missing."""
    value, low, high = stats.get(key), stats.get(key + LOW), stats.get(key + HIGH)
    if value is None or value != value:
        return "n/a"
    if low is None or high is None or low != low or high != high:
        return f"{value:{fmt}}{unit}"
    return f"{value:{fmt}}{unit} [{low:{fmt}}, {high:{fmt}}]"
