"""``caenet compare`` end to end on real MNIST at smoke scale: every kind of competitor."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.test_cli_e2e import REPO, caenet


@pytest.mark.slow
def test_compare_trains_every_competitor_and_writes_table_i_ii(tmp_path, data_root, smoke_run):
    config = str(REPO / "configs" / "mnist_lenet.yaml")
    cache = smoke_run["cwd"] / "artifacts"  # the session's smoke run: baseline, CAE and CAE-Net are found there
    out = caenet(["compare", config, "--smoke", "--set", "caenet.ablations=[]", "--set", "autoencoder.compare_unclustered=false",
                  "--set", "compare.slo_ms=1000", "--set", f"runtime.cache_dir={cache}", "--out", str(tmp_path / "cmp")],
                 tmp_path, data_root, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[baseline] cached" in out.stdout and "[caenet] cached" in out.stdout  # the pipeline's models, reused
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["lenet (baseline)", "CAE-Net", "LeNet-KD", "LeNet-WP", "LeNet-WC", "LeNet-int8", "BranchyNet",
                          "SubFlow", "AdaDeep", "CAE-Net-int8", "CAE-Net-SLO"]
    base = rows["lenet (baseline)"]
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
    for label, row in rows.items():
        assert 0 <= row["test_acc"] <= 1 and row["boards"]["this-cpu"]["latency_p50_ms"] > 0
        assert row["boards"]["this-cpu"]["meets_slo"], label
    assert (tmp_path / "cmp" / "figure1.png").stat().st_size > 10_000
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "| LeNet-WC" in table and "(1.00x [1.00, 1.00])" in table
    # smoke scale: the baseline stays near chance, and its row says so (issue 30)
    assert "| lenet (baseline) (did not converge) |" in table and "WARNING: did not converge: lenet (baseline): val acc" in table
    assert "LeNet-KD" in out.stdout
    # one MLflow parent with every competitor's stage nested under it
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = client.get_run(out.stdout.strip().splitlines()[-1].split()[-1])
    assert parent.data.tags["kind"] == "compare" and parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    names = {c.info.run_name for c in children}
    assert {"cmp-lenet-kd", "cmp-lenet-wp", "cmp-lenet-wc", "cmp-branchynet", "cmp-subflow"} <= names
    # a second compare reuses every stage
    again = caenet(["compare", config, "--smoke", "--set", "caenet.ablations=[]", "--set", "autoencoder.compare_unclustered=false",
                    "--set", "compare.slo_ms=1000", "--set", f"runtime.cache_dir={cache}", "--out", str(tmp_path / "cmp2")],
                   tmp_path, data_root, timeout=600)
    assert again.returncode == 0 and "running ->" not in again.stdout, again.stdout[-2000:]
