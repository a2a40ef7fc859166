"""Issue 28: the interval arithmetic of ``caenet compare`` and of the study on samples whose answer is known."""

import pytest

from suite.timing import P50
from suite.report import intervals, tables
from suite.timing import HIGH, LOW, WINDOW_P50, t_interval


def test_a_gap_gets_a_paired_t_interval_and_a_verdict():
    """[1, 2, 3]: mean 2, sd 1, t(2) = 4.303 -> 2 ± 2.484."""
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 4.303 / 3 ** 0.5) and high == pytest.approx(2 + 4.303 / 3 ** 0.5)
    assert intervals.verdict(*t_interval([0.020, 0.022, 0.018])[1:]) == "better"
    assert intervals.verdict(*t_interval([-0.02, -0.03, -0.025])[1:]) == "worse"
    assert intervals.verdict(*t_interval([0.02, -0.01, 0.005])[1:]) == "no difference at these seeds"
    assert intervals.verdict(*t_interval([0.02])[1:]) == "one seed: no interval"
    # paired: each seed's row minus the same seed's baseline. Seeds that move both rows cancel out:
    # the accuracies spread by 2 points, their differences by 0.6, so the gap is known to be positive
    row, base = {0: 0.600, 1: 0.620, 2: 0.580}, {0: 0.590, 1: 0.611, 2: 0.572}
    gap = intervals.paired_gap(row, base)
    diffs = [0.010, 0.009, 0.008]  # sd 0.001: 0.009 ± 4.303 * 0.001 / sqrt(3)
    assert gap["gap"] == pytest.approx(sum(diffs) / 3)
    assert gap["gap_lo"] == pytest.approx(0.009 - 4.303 * 0.001 / 3 ** 0.5)
    assert gap["verdict"] == "better"
    assert intervals.paired_gap({0: 0.6}, {0: 0.5})["verdict"] == "one seed: no interval"


def test_accuracy_interval_over_seeds_or_the_test_images():
    """Two or more seeds: the t-interval of the accuracies; one seed: the Wilson interval of
    the test images (50 of 100 right: [40.38%, 59.62%], the textbook value)."""
    low, high = intervals.wilson(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert intervals.wilson(1.0, 50)[1] == pytest.approx(1.0) and intervals.wilson(1.0, 50)[0] < 0.95  # never a point
    one = intervals.accuracy_interval({0: 0.5}, 100)
    assert (one["test_acc_lo"], one["test_acc_std"]) == (pytest.approx(0.4038, abs=1e-4), None)
    assert one["test_acc_interval"] == "Wilson over 100 test images"
    three = intervals.accuracy_interval({0: 0.01, 1: 0.02, 2: 0.03}, 100)
    assert three["test_acc"] == pytest.approx(0.02) and three["test_acc_std"] == pytest.approx(0.01)
    assert three["test_acc_hi"] == pytest.approx(0.02 + 4.303 * 0.01 / 3 ** 0.5)
    assert three["test_acc_by_seed"] == {"0": 0.01, "1": 0.02, "2": 0.03}


def test_the_front_keeps_the_points_nothing_beats_on_both_axes():
    points = [(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (0.5, 40.0), (1.0, 45.0), (2.0, 60.0)]
    # 2 is slower and less accurate than 1; 4 as fast as 0 and less accurate; two equal points both stay
    assert intervals.front(points) == [0, 1, 3, 5]


def _row(method, p50, acc, lo, hi, speedup=None):
    return {"method": method, "test_acc": acc, "test_acc_lo": lo, "test_acc_hi": hi, "test_acc_std": 0.01,
            "test_acc_interval": "t over 3 seeds", "gap": acc - 0.575, "gap_lo": acc - 0.59, "gap_hi": acc - 0.56,
            "verdict": "no difference at these seeds", "parameters": 10, "nonzero_parameters": 10, "size_bytes": 1024,
            "boards": {"this-cpu": {P50: p50, P50 + LOW: 0.9 * p50, P50 + HIGH: 1.1 * p50, "energy_mj": None,
                                    "energy_note": None, "meets_slo": p50 <= 5.0, "speedup": speedup, "speedup_lo": speedup and speedup * 0.9,
                                    "speedup_hi": speedup and speedup * 1.1}}}


def test_the_headline_is_the_fastest_row_whose_accuracy_interval_reaches_the_baselines(tmp_path):
    rows = [_row("AlexNet (baseline)", 6.0, 0.575, 0.55, 0.60),
            _row("too weak", 0.1, 0.50, 0.48, 0.54, 60.0),      # faster, but its interval ends below 55%
            _row("CAE-Net-int8", 0.2, 0.56, 0.545, 0.575, 30.0),  # overlaps: the headline
            _row("better but slower", 1.0, 0.62, 0.61, 0.63, 6.0)]
    head = intervals.headline(rows, "this-cpu")
    assert head["method"] == "CAE-Net-int8" and head["speedup"] == 30.0 and head["speedup_lo"] == 27.0
    line = intervals.headline_line(head, "AlexNet")
    assert "**CAE-Net-int8**" in line and "**30x [27, 33]** faster on this-cpu" in line and "(55.00-60.00%)" in line
    assert intervals.headline(rows[:2], "this-cpu") is None
    reference = _row("AlexNet-int8", 0.05, 0.57, 0.55, 0.59)  # the fastest, but the int8 rows' reference: no speed-up
    reference["boards"]["this-cpu"].update(speedup=None, speedup_lo=None, speedup_hi=None)
    assert intervals.headline([*rows, reference], "this-cpu")["method"] == "CAE-Net-int8"
    assert intervals.headline_line(None, "AlexNet", "ort") == "no model's accuracy interval reaches AlexNet's on ort."
    for row, p50 in ((rows[0], 3.0), (rows[2], 0.1)):  # a second runtime (a board running onnxruntime) for two rows
        row["boards"]["ort"] = {**row["boards"]["this-cpu"], P50: p50, P50 + LOW: 0.9 * p50, P50 + HIGH: 1.1 * p50}
    report = {"rows": rows, "boards": ["this-cpu", "ort"], "slo_ms": 5.0, "seeds": [0, 1, 2], "headline": head,
              "headlines": {"this-cpu": head, "ort": intervals.headline(rows, "ort")}}
    assert report["headlines"]["ort"]["method"] == "CAE-Net-int8" and report["headlines"]["ort"][P50] == 0.1
    intervals.front_plot(report, tmp_path / "front.png", "test")
    assert (tmp_path / "front.png").stat().st_size > 10_000
    text = tables.markdown(report, "Table I")
    assert "Accuracy (mean ± std)" in text and "vs baseline, pts [95%]" in text
    assert "| CAE-Net-int8 | 56.00 ± 1.00% | -1.50 [-3.00, +0.00] no difference at these seeds |" in text


def test_a_row_whose_model_differs_between_seeds_reports_their_envelope():
    """Two seeds' models, 2x and 4x faster than the baseline in every paired window: the row's
    speed-up is their geometric mean (2.83x), its interval the envelope of the two models' own
    (exactly [2, 4] here, not a t-interval over two picks), its p50 interval holds both."""
    from suite.commands.compare import _envelope

    base = {WINDOW_P50: [4.0, 4.0, 4.0]}
    stats = [{P50: 2.0, P50 + LOW: 1.9, P50 + HIGH: 2.1, "latency_p90_ms": 2.2, WINDOW_P50: [2.0, 2.0, 2.0]},
             {P50: 1.0, P50 + LOW: 0.95, P50 + HIGH: 1.05, "latency_p90_ms": 1.1, WINDOW_P50: [1.0, 1.0, 1.0]}]
    out = _envelope(stats, base)
    assert out["speedup"] == pytest.approx(8 ** 0.5)
    assert (out["speedup_lo"], out["speedup_hi"]) == (pytest.approx(2.0), pytest.approx(4.0))
    assert (out[P50 + LOW], out[P50 + HIGH], out[P50]) == (0.95, 2.1, 1.5)
