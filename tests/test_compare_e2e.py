"""``caenet compare`` end to end on real MNIST at smoke scale: every kind of competitor."""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from suite.report import intervals
from tests.test_cli_e2e import REPO, caenet
from tests.test_edge import _benchmarks, _loopback


@pytest.mark.slow
def test_compare_trains_every_competitor_and_writes_table_i_ii(tmp_path, data_root, smoke_run):
    # configs/mnist_lenet.yaml with AdaDeep at seed 0 only (a row's own `seeds`, as the larger
    # CIFAR networks have): its Ray Tune search is the costliest row here, and one seed of it
    # tests the rows trained at fewer seeds than the rest
    base = yaml.safe_load((REPO / "configs" / "mnist_lenet.yaml").read_text())
    methods = [{**m, "seeds": [0]} if m["kind"] == "adadeep" else m for m in base["compare"]["methods"]]
    for m in methods:
        if m["kind"] == "pipeline":
            m["config"] = str(REPO / "configs" / m["config"])
    config = tmp_path / "mnist_lenet.yaml"
    untrained = {"name": "LeNet-pruned (0.5), untrained", "model": "lenet", "prune": 0.5}  # a size-and-latency row
    config.write_text(yaml.safe_dump({"extends": str(REPO / "configs" / "mnist_lenet.yaml"),
                                      "compare": {"methods": methods, "size_and_latency": [untrained]}}))
    config = str(config)
    cache = smoke_run["cwd"] / "artifacts"  # the session's smoke run: baseline, CAE and CAE-Net are found there
    out = caenet(["compare", config, "--smoke", "--set", "caenet.ablations=[]", "--set", "autoencoder.compare_unclustered=false",
                  "--set", "compare.slo_ms=1000", "--set", f"runtime.cache_dir={cache}", "--out", str(tmp_path / "cmp"),
                  "--seeds", "0", "1"], tmp_path, data_root, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[baseline] cached" in out.stdout and "[caenet] cached" in out.stdout  # the pipeline's models, reused
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["lenet (baseline)", "CAE-Net", "CAE-Net (paper's choices)", "LeNet-KD", "LeNet-WP", "LeNet-WC", "LeNet-int8", "BranchyNet",
                          "SubFlow", "AdaDeep", "CAE-Net-int8", "CAE-Net-SLO"]
    base = rows["lenet (baseline)"]
    # the paper's choices (kind: pipeline): the pipeline's own stages under mnist_lenet_paper.yaml's keys
    paper = Path(rows["CAE-Net (paper's choices)"]["stage_dir"])
    assert paper.name.startswith("caenet-") and paper != Path(rows["CAE-Net"]["stage_dir"])
    assert '"head": "conv"' in (paper / "params.json").read_text()
    assert rows["LeNet-KD"]["parameters"] < 0.2 * base["parameters"]
    # WP: 40% of the conv/linear weights are zero and the sparse file is smaller than the dense one
    assert rows["LeNet-WP"]["nonzero_parameters"] < 0.65 * base["parameters"]
    assert rows["LeNet-WP"]["size_bytes"] < base["size_bytes"]
    # WC on top of WP: packed 5-bit indices, still the pruned weights
    assert rows["LeNet-WC"]["size_bytes"] < 0.3 * base["size_bytes"]
    assert rows["LeNet-WC"]["nonzero_parameters"] <= rows["LeNet-WP"]["nonzero_parameters"]
    assert rows["LeNet-int8"]["size_bytes"] < 0.5 * base["size_bytes"]
    assert rows["LeNet-int8"]["parameters"] == base["parameters"]
    assert sum(v for k, v in rows["BranchyNet"].items() if k.startswith("exit_share_")) == pytest.approx(1.0)
    # SubFlow with a 1000 ms budget keeps the full network (the largest ratio that fits)
    subflow_dir = Path(rows["SubFlow"]["stage_dir"])
    ratios = json.loads((subflow_dir / "subflow_ratios.json").read_text())
    assert ratios["chosen"] == 1.0 and len(ratios["tried"]) == 4
    # AdaDeep: every Tune trial recorded; the pick is the best-rewarded plan, within the constraints when any plan is
    search = json.loads((Path(rows["AdaDeep"]["stage_dir"]) / "adadeep_search.json").read_text())
    scored = [t for t in search["trials"] if "reward" in t]
    assert len(search["trials"]) == 4 and len(scored) == 4  # --smoke: 4 plans of 20 fine-tuning batches, [t.get("error") for t in search["trials"]]
    assert any(t["config"]["int8"] for t in scored)  # int8 plans were drawn and measured too
    assert search["best"]["reward"] == max(t["reward"] for t in scored)
    if search["met"]:
        ref = search["reference"]
        assert search["best"]["val_acc"] >= ref["val_acc"] - 0.05 and search["best"]["latency_p50_ms"] <= 1000
    # the SLO loop: candidates in order, stopping at the first that meets its budget
    loop = json.loads((Path(rows["CAE-Net-SLO"]["stage_dir"]) / "slo_loop.json").read_text())
    ratios = [t["ratio"] for t in loop["tried"]]
    assert ratios == sorted(ratios) and ratios[0] == 0.0 and loop["chosen"] == ratios[-1]
    assert not any(t["meets_budget"] for t in loop["tried"][:-1])
    assert [t["parameters"] for t in loop["tried"]] == sorted((t["parameters"] for t in loop["tried"]), reverse=True)
    if loop["chosen"] > 0:
        assert rows["CAE-Net-SLO"]["parameters"] < rows["CAE-Net"]["parameters"]
    # two seeds (issue 28): each row's accuracy at both, their mean ± std, the gap to the same
    # seed's baseline with its paired interval and verdict
    assert report["seeds"] == [0, 1]
    for label, row in rows.items():
        accs = row["test_acc_by_seed"]
        assert row["test_acc_lo"] <= row["test_acc"] <= row["test_acc_hi"], label
        assert row["boards"]["this-cpu"]["latency_p50_ms"] > 0 and row["boards"]["this-cpu"]["meets_slo"], label
        if label == "AdaDeep":  # its own seeds: [0]; a Wilson interval over the test images, no paired one
            assert set(accs) == {"0"} and row["test_acc"] == accs["0"] and row["test_acc_std"] is None
            assert row["gap_lo"] != row["gap_lo"] and row["verdict"] == "one seed: no interval"
            assert "AdaDeep: trained at seed 0 only" in json.dumps(report["notes"])
            continue
        assert set(accs) == {"0", "1"} and row["test_acc"] == pytest.approx((accs["0"] + accs["1"]) / 2), label
        assert row["test_acc_std"] is not None, label
        if label != "lenet (baseline)":
            assert row["gap_lo"] <= row["gap"] <= row["gap_hi"] and row["verdict"] in (
                "better", "worse", "no difference at these seeds"), label
    # an architecture is timed once whatever the seeds; BranchyNet's latency depends on its weights
    timed = int(out.stdout.split("timing ")[-1].split()[0])
    assert len(rows) < timed < 2 * len(rows) and "BranchyNet: its model differs between seeds" in out.stdout + json.dumps(report)
    assert (tmp_path / "cmp" / "figure1.png").stat().st_size > 10_000 and (tmp_path / "cmp" / "front.png").stat().st_size > 10_000
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "| LeNet-WC" in table and "(1.00x [1.00, 1.00])" in table and "vs baseline, pts [95%]" in table
    # the size-and-latency row: sized and timed beside the baseline, never trained, not in Table II
    sized = {r["method"]: r for r in report["size_and_latency"]}["LeNet-pruned (0.5), untrained"]
    assert untrained["name"] not in rows and "LeNet-pruned" not in out.stdout.split("timing ")[0]
    assert sized["parameters"] < 0.5 * base["parameters"] and sized["boards"]["this-cpu"]["reference"] == "baseline"
    assert sized["boards"]["this-cpu"]["speedup_lo"] <= sized["boards"]["this-cpu"]["speedup"] <= sized["boards"]["this-cpu"]["speedup_hi"]
    head = report["headline"]  # the fastest row whose accuracy interval reaches the baseline's
    assert head is None or rows[head["method"]]["test_acc_hi"] >= rows["lenet (baseline)"]["test_acc_lo"]
    assert "Fastest at parity: " in table
    # issue 42: the shipped CAE-Net against the baseline at each precision (here, no boards: PyTorch)
    assert "fp32 on PyTorch: **CAE-Net** against **lenet (baseline)**: **" in table
    assert "int8 on PyTorch: **CAE-Net-int8** against **LeNet-int8**: **" in table
    assert rows["CAE-Net-int8"]["boards"]["this-cpu"]["reference"] == "LeNet-int8" and intervals.mixed_pairs(report) == []
    # smoke scale: the baseline stays near chance, and its row says so (issue 30)
    assert "| lenet (baseline) (did not converge) |" in table and "WARNING: did not converge: lenet (baseline): " in table and " (seed " in table
    assert "LeNet-KD" in out.stdout
    # one MLflow parent with every competitor's stage nested under it
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = client.get_run(out.stdout.strip().splitlines()[-1].split()[-1])
    assert parent.data.tags["kind"] == "compare" and parent.info.status == "FINISHED"
    seed_runs = {c.info.run_name: c for c in client.search_runs([parent.info.experiment_id],
                                                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert set(seed_runs) == {"seed 0", "seed 1"} and seed_runs["seed 1"].info.status == "FINISHED"
    assert seed_runs["seed 1"].data.metrics["LeNet-KD.test_acc"] == rows["LeNet-KD"]["test_acc_by_seed"]["1"]
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{seed_runs['seed 1'].info.run_id}'")
    names = {c.info.run_name for c in children}
    assert {"baseline", "cmp-lenet-kd", "cmp-lenet-wp", "cmp-lenet-wc", "cmp-branchynet", "cmp-subflow"} <= names
    assert {"front.png", "table.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    # A second compare reuses every stage and adds the SLO loop on a board (issue 25): with
    # --boards every model is also timed on the loopback board "pi", and the new method's
    # candidates are timed there (its budget is out of reach: the unpruned model and one ratio).
    methods = yaml.safe_load((REPO / "configs" / "mnist_lenet.yaml").read_text())["compare"]["methods"]
    methods.append({"name": "CAE-Net-SLO-pi", "kind": "slo_prune", "of": "caenet", "ratios": [0.5], "budget_ms": 0.001,
                    "board": "pi"})
    home = Path(tempfile.mkdtemp(prefix="bpi", dir="/tmp"))
    script = str(REPO / "scripts" / "loopback_board.sh")
    try:
        boards = tmp_path / "boards.yaml"
        boards.write_text(yaml.safe_dump({"boards": [_loopback(home, "pi", "onnxruntime")], "bench": {
            "warmup": 3, "windows": 3, "window_queries": 20, "window_seconds": 0, "max_windows": 3}}))
        again = caenet(["compare", config, "--smoke", "--set", "caenet.ablations=[]", "--set", "autoencoder.compare_unclustered=false",
                        "--set", "compare.slo_ms=1000", "--set", f"runtime.cache_dir={cache}", "--out", str(tmp_path / "cmp2"),
                        "--set", f"compare.methods={json.dumps(methods)}", "--boards", str(boards)],
                       tmp_path, data_root, timeout=600)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        ran = [line for line in again.stdout.splitlines() if "running ->" in line]
        assert len(ran) == 1 and ran[0].startswith("[cmp-cae-net-slo-pi]"), ran
        report = json.loads((tmp_path / "cmp2" / "report.json").read_text())
        rows = {r["method"]: r for r in report["rows"]}
        loop = json.loads((Path(rows["CAE-Net-SLO-pi"]["stage_dir"]) / "slo_loop.json").read_text())
        assert [t["ratio"] for t in loop["tried"]] == [0.0, 0.5] and not any(t["meets_budget"] for t in loop["tried"])
        table = (tmp_path / "cmp2" / "table.md").read_text()
        for label, row in rows.items():
            # N/A with its reason: BranchyNet (where an image exits depends on the image, never a
            # traced guess)
            if "pi" not in row["boards"]:
                assert f"pi: {label} N/A: " in table, label
                continue
            pi = row["boards"]["pi"]
            assert pi["latency_p50_ms_lo"] <= pi["latency_p50_ms"] <= pi["latency_p50_ms_hi"], label
            if pi["reference"] != label:  # the baseline and the baseline's int8 are the references
                assert pi["speedup_lo"] <= pi["speedup"] <= pi["speedup_hi"], label
        # the SLO loop's board measurements are the table's: read back from the measurement cache
        assert rows["CAE-Net"]["boards"]["pi"]["cached"] and rows["CAE-Net-SLO-pi"]["boards"]["pi"]["cached"]
        assert loop["tried"][-1]["latency_p50_ms"] == rows["CAE-Net-SLO-pi"]["boards"]["pi"]["latency_p50_ms"]
        # WP and WC share LeNet's architecture: one visit for both
        assert rows["LeNet-WC"]["boards"]["pi"]["latency_p50_ms"] == rows["LeNet-WP"]["boards"]["pi"]["latency_p50_ms"]
        assert {label for label, row in rows.items() if "pi" not in row["boards"]} == {"BranchyNet"}
        assert report["size_and_latency"][0]["boards"]["pi"]["speedup"] > 0  # timed on the board too
        assert "pi p50 ms [95%]" in table and "pi: BranchyNet N/A: early exits" in table
        # issue 42: int8 rows run on onnxruntime as onnxruntime's own int8, each timed beside the
        # baseline's int8 (never the float baseline), on the board and here
        for label in ("LeNet-int8", "CAE-Net-int8"):
            assert rows[label]["precision"] == "int8" and rows[label]["boards"]["pi"]["reference"] == "LeNet-int8", label
            assert rows[label]["boards"]["this-cpu"]["reference"] == "LeNet-int8", label
        assert rows["CAE-Net"]["boards"]["pi"]["reference"] == "lenet (baseline)" and rows["CAE-Net"]["precision"] == "fp32"
        assert rows["CAE-Net-int8"]["quantizes"] == "CAE-Net" and rows["LeNet-int8"]["quantizes"] == "lenet (baseline)"
        assert (Path(rows["LeNet-int8"]["stage_dir"]) / "model.int8.onnx").stat().st_size > 0
        pairs = {(p["precision"], p["board"]): p for p in report["pairs"] if p["precision"] != "fastest form here"}
        assert sorted(pairs) == [("fp32", "pi"), ("fp32", "this-cpu"), ("int8", "pi"), ("int8", "this-cpu")]
        assert sum(p["precision"] == "fastest form here" for p in report["pairs"]) == 1
        assert pairs[("int8", "pi")]["method"] == "CAE-Net-int8" and pairs[("int8", "pi")]["reference"] == "LeNet-int8"
        assert pairs[("int8", "pi")]["speedup"] == rows["CAE-Net-int8"]["boards"]["pi"]["speedup"]
        assert intervals.mixed_pairs(report) == []
        assert "int8 on onnxruntime: **CAE-Net-int8** against **LeNet-int8**: **" in table
        assert "SLO loop for caenet: budget 0.001 ms batch-1 p50 on board pi" in again.stdout
        # measured there: every visit logged ran the board's Python (two for the loop, then one
        # per architecture the cache lacked)
        assert _benchmarks(home) == again.stdout.count("beside the baseline in") >= 3
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
        parent = client.get_run(again.stdout.strip().splitlines()[-1].split()[-1])
        assert parent.data.metrics["caenet.latency_p50_ms.pi"] == pytest.approx(rows["CAE-Net"]["boards"]["pi"]["latency_p50_ms"])
        assert parent.data.tags["board.pi.runtime_version"]
    finally:
        subprocess.run([script, "stop", str(home)], timeout=30)
        shutil.rmtree(home, ignore_errors=True)
