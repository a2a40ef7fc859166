"""Issue 42: every speed-up a published table prints compares two models on one runtime at one
precision, and the README's headline is the shipped CAE-Net against the baseline that way. No
Ray: the published reports and made-up ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from suite.report import intervals
from suite.timing import HIGH, LOW, P50

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = sorted((REPO / "docs" / "results").glob("compare_*.json"))


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.name)
def test_every_published_speedup_is_like_for_like(path):
    report = json.loads(path.read_text())
    assert intervals.mixed_pairs(report) == [], f"{path.name}: re-run caenet compare and publish it"
    assert {p["precision"] for p in report["pairs"]} >= {"fp32", "fastest form here"}, path.name


def _cell(p50: float, reference: str, speedup: float | None = None) -> dict:
    cell = {P50: p50, P50 + LOW: 0.95 * p50, P50 + HIGH: 1.05 * p50, "reference": reference}
    if speedup is not None:
        cell.update(speedup=speedup, speedup_lo=0.9 * speedup, speedup_hi=1.1 * speedup)
    return cell


def _row(method: str, precision: str, accs: list[float], cells: dict, quantizes: str | None = None, size: int = 1000) -> dict:
    return {"method": method, "precision": precision, "quantizes": quantizes, "test_acc": sum(accs) / len(accs),
            "test_acc_lo": min(accs), "test_acc_hi": max(accs), "size_bytes": size,
            "test_acc_by_seed": {str(i): a for i, a in enumerate(accs)}, "boards": cells}


def _report() -> dict:
    base, q = "alexnet (baseline)", "AlexNet-int8"
    return {"boards": ["this-cpu", "onnxruntime"], "runtimes": {"this-cpu": "pytorch", "onnxruntime": "onnxruntime"}, "rows": [
        _row(base, "fp32", [0.60, 0.62, 0.61], {"this-cpu": _cell(8.0, base), "onnxruntime": _cell(5.0, base)}, size=37_000_000),
        _row("CAE-Net", "fp32", [0.63, 0.64, 0.62], {"this-cpu": _cell(1.6, base, 5.0), "onnxruntime": _cell(0.25, base, 20.0)},
             size=5_000_000),
        _row(q, "int8", [0.60, 0.61, 0.61], {"this-cpu": _cell(1.3, q), "onnxruntime": _cell(1.2, q)}, quantizes=base,
             size=9_400_000),
        _row("CAE-Net-int8", "int8", [0.62, 0.63, 0.62], {"this-cpu": _cell(0.26, q, 5.0), "onnxruntime": _cell(0.2, q, 6.0)},
             quantizes="CAE-Net", size=1_300_000)]}


def test_caenet_is_paired_with_the_baseline_at_its_precision_on_each_runtime_and_on_its_fastest_form():
    report = _report()
    pairs = intervals.like_for_like(report)
    got = [(p["precision"], p["board"], p["method"], p["reference"]) for p in pairs]
    assert got == [("fp32", "this-cpu", "CAE-Net", "alexnet (baseline)"), ("fp32", "onnxruntime", "CAE-Net", "alexnet (baseline)"),
                   ("int8", "this-cpu", "CAE-Net-int8", "AlexNet-int8"), ("int8", "onnxruntime", "CAE-Net-int8", "AlexNet-int8"),
                   ("fastest form here", "onnxruntime", "CAE-Net-int8", "AlexNet-int8")]
    int8_ort = pairs[3]
    assert int8_ort["speedup"] == 6.0 and int8_ort["gap"] == pytest.approx((0.02 + 0.02 + 0.01) / 3)
    fastest = pairs[4]  # 0.2 ms against the baseline's fastest form, its int8 on onnxruntime at 1.2 ms
    assert fastest["speedup"] == pytest.approx(6.0) and fastest["reference_board"] == "onnxruntime"
    assert fastest["speedup_lo"] == pytest.approx(1.2 * 0.95 / (0.2 * 1.05)) and fastest["speedup_hi"] > 6.0
    line = intervals.pair_line(int8_ort)
    assert line.startswith("int8 on onnxruntime: **CAE-Net-int8** against **AlexNet-int8**: **6x [5.4, 6.6]** faster")
    assert "1.3 MB vs 9.4 MB" in line and "62.33% vs 60.67%" in line
    assert "fastest form here: **CAE-Net-int8** on onnxruntime against **AlexNet-int8** on onnxruntime" in intervals.pair_line(fastest)
    report["pairs"] = pairs
    assert intervals.mixed_pairs(report) == []


def test_a_speedup_across_precisions_or_runtimes_is_found():
    report = _report()
    report["pairs"] = intervals.like_for_like(report)
    wrong = copy.deepcopy(report)  # CAE-Net-int8 against the float baseline: the 32x of the old Table I
    wrong["rows"][3]["boards"]["this-cpu"]["reference"] = "alexnet (baseline)"
    assert intervals.mixed_pairs(wrong) == ["CAE-Net-int8 (int8) on this-cpu: a speed-up against alexnet (baseline) (fp32)"]
    wrong = copy.deepcopy(report)  # a row without its precision (a report from before issue 42)
    del wrong["rows"][1]["precision"]
    assert "CAE-Net (None) on this-cpu" in intervals.mixed_pairs(wrong)[0]
    wrong = copy.deepcopy(report)  # a pair whose two models ran on different runtimes
    wrong["pairs"][0]["reference_board"] = "onnxruntime"
    assert intervals.mixed_pairs(wrong) == ["pair CAE-Net vs alexnet (baseline): fp32 on this-cpu against fp32 on onnxruntime"]
    wrong = copy.deepcopy(report)  # the baseline not timed on the board a speed-up names
    del wrong["rows"][0]["boards"]["onnxruntime"]
    assert intervals.mixed_pairs(wrong) == ["CAE-Net on onnxruntime: a speed-up against alexnet (baseline), which was not timed there"]


def test_size_and_latency_rows_are_built_untrained_and_pruned_as_asked(data_root):
    """The larger networks of Table I are sized and timed, not trained (issue 42): each entry is
    the registry's network, channel-pruned where it asks, and its cache identity says so."""
    from suite.commands.compare import size_and_latency_models
    from suite.data import load_split
    from suite.experiment import from_tree
    from suite.metrics import count_parameters

    cfg = from_tree({"data": {"dataset": "mnist", "root": str(data_root), "test_limit": 50}, "baseline": {"model": "lenet"},
                     "compare": {"size_and_latency": [{"name": "LeNet", "model": "lenet"},
                                                      {"name": "LeNet-pruned", "model": "lenet", "prune": 0.5}]}}).effective()
    built = size_and_latency_models(cfg, load_split(cfg.data, "test"))
    assert list(built) == ["LeNet", "LeNet-pruned"]
    full, pruned = (count_parameters(built[n][0])["parameters"] for n in built)
    assert pruned < 0.5 * full
    assert built["LeNet-pruned"][1] == ["lenet", {}, {"prune": 0.5, "untrained": True}]
    with pytest.raises(Exception, match="unknown model 'nope'"):
        from_tree({"compare": {"size_and_latency": [{"name": "x", "model": "nope"}]}})
