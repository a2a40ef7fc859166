"""The one timing protocol (suite/timing.py) on synthetic timings, where the truth is known:
the p50 interval covers the true median about 95% of the time, the early stop triggers (and
does not, on noise too wide for it), and a paired speed-up's interval holds the true ratio."""

import math

import numpy as np
import pytest

from suite.timing import HIGH, LOW, P50, P90, WINDOW_P50, Protocol, measure, quantile_ci, speedup, summarize


def test_the_median_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_median = math.exp(0.0)  # log-normal call times (a long right tail, as real latencies have)
    trials, hits, widths = 2000, 0, []
    for _ in range(trials):
        x = rng.lognormal(0.0, 0.25, 300)
        _, low, high = quantile_ci(x, 0.5)
        hits += low <= true_median <= high
        widths.append(high - low)
    assert 0.93 <= hits / trials <= 0.975, hits / trials
    # and it is not trivially wide: a few percent of the median at 300 calls
    assert np.median(widths) < 0.1


def test_p90_interval_and_summary_keys():
    rng = np.random.default_rng(1)
    true_p90 = float(np.exp(0.25 * 1.2815516))
    hits = sum(lo <= true_p90 <= hi for lo, hi in (quantile_ci(rng.lognormal(0, 0.25, 400), 0.9)[1:] for _ in range(1000)))
    assert 0.92 <= hits / 1000 <= 0.98
    stats = summarize([rng.lognormal(0, 0.25, 60).tolist() for _ in range(5)])
    assert stats["windows"] == 5 and stats["queries"] == 300 and len(stats[WINDOW_P50]) == 5
    assert stats[P50 + LOW] <= stats[P50] <= stats[P50 + HIGH] <= stats[P90]


class FakeClock:
    """Calls that take a known, random time: the clock moves by the call's duration."""

    def __init__(self, medians: dict, sigma: float, seed: int = 0):
        self.now, self.rng, self.medians, self.sigma = 0.0, np.random.default_rng(seed), medians, sigma

    def __call__(self) -> float:
        return self.now

    def call(self, name: str):
        def run(_i):
            self.now += self.medians[name] * self.rng.lognormal(0, self.sigma) / 1e3
        return run


def test_early_stop_after_the_minimum_windows_when_the_interval_is_tight():
    clock = FakeClock({"a": 2.0}, sigma=0.02)
    stats = measure({"a": clock.call("a")}, Protocol(warmup=2, windows=5, window_queries=50, max_windows=20, ci_share=0.02),
                    clock=clock)["a"]
    assert stats["ci_share_met"] and stats["windows"] == 5 and stats["queries"] == 250
    assert stats[P50 + LOW] <= 2.0 <= stats[P50 + HIGH]


def test_noisy_calls_get_more_windows_and_stop_at_the_cap():
    clock = FakeClock({"a": 2.0}, sigma=1.0)
    windows = []
    stats = measure({"a": clock.call("a")}, Protocol(warmup=0, windows=5, window_queries=20, max_windows=9, ci_share=0.01),
                    on_window=lambda *w: windows.append(w), clock=clock)["a"]
    assert not stats["ci_share_met"] and stats["windows"] == 9 == len(windows)
    # a looser share lets the same noise stop before the cap
    clock = FakeClock({"a": 2.0}, sigma=1.0)
    loose = measure({"a": clock.call("a")}, Protocol(warmup=0, windows=5, window_queries=20, max_windows=40, ci_share=0.15),
                    clock=clock)["a"]
    assert loose["ci_share_met"] and 5 <= loose["windows"] < 40


def test_windows_alternate_and_last_long_enough():
    clock = FakeClock({"a": 1.0, "b": 3.0}, sigma=0.1)
    order = []
    measure({"a": clock.call("a"), "b": clock.call("b")},
            Protocol(warmup=1, windows=3, window_queries=4, window_seconds=0.02, max_windows=3),
            on_window=lambda name, i, start, end, n: order.append((name, i, n)), clock=clock)
    assert [o[:2] for o in order] == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert all(n >= 4 for *_, n in order) and min(n for name, _, n in order if name == "a") >= 15  # 20 ms of 1 ms calls


def test_a_paired_speedup_interval_holds_the_true_ratio():
    rng = np.random.default_rng(2)
    hits, trials = 0, 400
    for _ in range(trials):
        load = rng.lognormal(0, 0.2, 8)  # machine load that drifts between windows, shared by each pair
        base = 4.0 * load * rng.lognormal(0, 0.02, 8)
        model = 1.0 * load * rng.lognormal(0, 0.02, 8)
        ratio, low, high = speedup(base.tolist(), model.tolist())
        hits += low <= 4.0 <= high
    assert 0.9 <= hits / trials <= 0.99
    ratio, low, high = speedup([4.0] * 5, [1.0] * 5)
    assert ratio == pytest.approx(4.0) and low == pytest.approx(4.0) and high == pytest.approx(4.0)


def test_measure_pairs_each_models_windows_for_its_speedup():
    clock = FakeClock({"base": 4.0, "fast": 1.0}, sigma=0.05, seed=3)
    stats = measure({"base": clock.call("base"), "fast": clock.call("fast")},
                    Protocol(warmup=2, windows=6, window_queries=40, max_windows=6), clock=clock)
    ratio, low, high = speedup(stats["base"][WINDOW_P50], stats["fast"][WINDOW_P50])
    assert low <= 4.0 <= high and high - low < 0.5
