"""The run's machine-readable ``summary.json`` and its printed table."""

from __future__ import annotations

import math

from suite.metrics import NONZERO_PARAMETERS, ONNXRUNTIME, PARAMETERS, SIZE_BYTES, SPEEDUP, TEST_ACC
from suite.timing import HIGH, LOW, P50, interval
from suite.training.convergence import unconverged

ORT_P50 = ONNXRUNTIME + P50  # the same model's ONNX export on onnxruntime
ROW = (TEST_ACC, P50, P50 + LOW, P50 + HIGH, ORT_P50, ORT_P50 + LOW, ORT_P50 + HIGH, PARAMETERS, NONZERO_PARAMETERS, SIZE_BYTES)
SPEEDUP_ORT = "speedup_p50_onnxruntime"  # CAE-Net against the baseline, both ONNX on onnxruntime (fp32, the same threads)


def build(evaluation: dict, stages: dict, targets: str = "cluster") -> dict:
    """Headline numbers of a pipeline run from its stages' metrics (``targets``: the run's
    ``autoencoder.targets``, which says what its CAE converts to)."""
    ev = evaluation
    base, cae = "baseline", "caenet"

    def get(label, key):
        return ev.get(f"{label}.{key}", float("nan"))

    summary = {
        "baseline": {k: get(base, k) for k in ROW},
        "caenet": {k: get(cae, k) for k in ROW},
    }
    # paired windows' p50 ratios with their 95% interval (suite.timing.speedup); an older
    # evaluation without them: the ratio of the p50s
    summary["speedup_p50"] = ev.get(f"{cae}.{SPEEDUP}", summary["baseline"][P50] / summary["caenet"][P50])
    summary["speedup_p50" + LOW] = get(cae, SPEEDUP + LOW)
    summary["speedup_p50" + HIGH] = get(cae, SPEEDUP + HIGH)
    for suffix in ("", LOW, HIGH):  # like for like on the boards' runtime (an evaluation from before it: n/a)
        summary[SPEEDUP_ORT + suffix] = get(cae, ONNXRUNTIME + SPEEDUP + suffix)
    summary["parameter_ratio"] = summary["baseline"]["parameters"] / summary["caenet"]["parameters"]
    def mse(stage: str, own: str) -> float:  # the run's CAE when its targets are of that kind, else the comparison's
        name = "autoencoder" if targets == own else stage
        return stages.get(name, {}).get("reconstruction_mse", float("nan"))

    summary["reconstruction_mse"] = {  # the paper's comparison: class-cluster targets vs one target per class
        "clustered": mse("autoencoder_clustered", "cluster"),
        "unclustered": mse("autoencoder_unclustered", "class"),
    }
    summary["accuracy_transfer"] = {
        "with_transfer_kd": get(cae, "test_acc"),
        "no_kd": get("caenet_no_kd", "test_acc"),
        "no_transfer": get("caenet_no_transfer", "test_acc"),
    }
    summary["clusters_per_class_mean"] = stages.get("clustering", {}).get("k_mean", float("nan"))
    # trainings that resumed from a checkpoint (bit-exact on a CPU: the checkpoint holds the
    # random generators; a GPU's non-deterministic kernels may take another path)
    summary["resumed_from_epoch"] = {name: m["resumed_from_epoch"] for name, m in stages.items()
                                     if isinstance(m, dict) and m.get("resumed_from_epoch")}
    # trainings that did not learn (suite.training.convergence): every comparison with them is marked
    summary["not_converged"] = unconverged(stages)
    for label in (base, cae):
        summary[label]["converged"] = label not in summary["not_converged"]
    return _clean(summary)


def _clean(tree):
    if isinstance(tree, dict):
        return {k: _clean(v) for k, v in tree.items()}
    if isinstance(tree, float) and math.isnan(tree):
        return None
    return tree


def _fmt(v, pct=False) -> str:
    if v is None:
        return "n/a"
    if pct:
        return f"{100 * v:.2f}%"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _run_label(summary: dict) -> str:
    """What the run's CAE-Net is: its encoder (when not the CAE's, frozen) and its KD settings."""
    kd, encoder = summary.get("caenet_kd") or {}, summary.get("caenet_encoder", "frozen")
    parts = [] if encoder == "frozen" else [f"encoder {encoder}"]
    if kd:
        parts.append("no KD" if kd.get("alpha") == 0 else f"KD T {kd['temperature']:g}, alpha {kd['alpha']:g}")
    return f"the run's ({', '.join(parts)})" if parts else "transfer + KD"


def _parameters(ratio) -> str:
    """CAE-Net's parameter count against the baseline's, read the right way round."""
    if ratio is None:
        return "parameters: n/a"
    if ratio >= 1:
        return f"parameters: {ratio:.3g}x fewer than the baseline"
    return f"parameters: {1 / ratio:.3g}x more than the baseline"


def _ablation(value, variant: str, summary: dict) -> str:
    """An ablation's accuracy, or why there is none."""
    if value is not None:
        return _fmt(value, True)
    if variant == "no_kd" and (summary.get("caenet_kd") or {}).get("alpha") == 0:
        return "= this run's (it uses no KD)"
    return f"n/a (not trained: add {variant} to caenet.ablations)"


def table(summary: dict) -> str:
    b, c = summary["baseline"], summary["caenet"]
    unconverged = summary.get("not_converged") or {}
    mark = {label: " (did not converge)" if label in unconverged else "" for label in ("baseline", "caenet")}
    rows = [
        ("", "baseline" + mark["baseline"], "CAE-Net" + mark["caenet"]),
        ("test accuracy", _fmt(b["test_acc"], True), _fmt(c["test_acc"], True)),
        ("batch-1 latency p50 (ms) [95% interval]", interval(b, P50, ".4f"), interval(c, P50, ".4f")),
        ("  the same as ONNX on onnxruntime", interval(b, ORT_P50, ".4f"), interval(c, ORT_P50, ".4f")),
        ("parameters", _fmt(b["parameters"]), _fmt(c["parameters"])),
        ("size (KB)", _fmt(b["size_bytes"] and round(b["size_bytes"] / 1024, 1)), _fmt(c["size_bytes"] and round(c["size_bytes"] / 1024, 1))),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width[i]) if i == 0 else cell.rjust(width[i]) for i, cell in enumerate(r)) for r in rows]
    rec, tr = summary["reconstruction_mse"], summary["accuracy_transfer"]
    lines += [
        f"speed-up (p50, fp32, {summary.get('latency_threads', 1)} thread(s) on this CPU): PyTorch {interval(summary, 'speedup_p50', '.3g', 'x')}, "
        f"onnxruntime {interval(summary, SPEEDUP_ORT, '.3g', 'x')}   {_parameters(summary['parameter_ratio'])}",
        f"CAE reconstruction MSE (val): clustered {_fmt(rec['clustered'])} vs one target per class {_fmt(rec['unclustered'])}"
        f"   (mean k = {_fmt(summary['clusters_per_class_mean'])})",
        f"CAE-Net test accuracy: this run's {_fmt(tr['with_transfer_kd'], True)}"
        f" | without KD {_ablation(tr['no_kd'], 'no_kd', summary)}"
        f" | trained from scratch {_ablation(tr['no_transfer'], 'no_transfer', summary)}",
    ]
    for name, why in sorted(unconverged.items()):  # the comparison above is not a result until these are fixed
        lines.append(f"WARNING: {name} did not converge: {why}")
    resumed = summary.get("resumed_from_epoch") or {}
    if resumed:  # the same numbers as an uninterrupted run on a CPU (the checkpoints hold the RNG states)
        lines.append("resumed from checkpoints: " + ", ".join(f"{name} after epoch {e}" for name, e in sorted(resumed.items())))
    return "\n".join(lines)
