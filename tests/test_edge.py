"""Edge boards end to end against a real OpenSSH server on 127.0.0.1: export, deploy with
Fabric, run, fetch, record in MLflow; a closed port and an unknown host key fail alone."""

import getpass
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture(scope="module")
def sshd():
    """A real sshd on a free loopback port, started by the script the README uses."""
    if not Path(SSHD).exists():
        pytest.fail("openssh-server is not installed (scripts/setup.sh installs it)")
    home = Path(tempfile.mkdtemp(prefix="sshd", dir="/tmp"))
    script = str(REPO / "scripts" / "loopback_board.sh")
    started = subprocess.run([script, "start", str(home)], capture_output=True, text=True, timeout=60)
    if started.returncode != 0:
        pytest.fail(f"loopback_board.sh failed: {started.stderr[-2000:]}")
    port = int((home / "port").read_text())
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    (home / "empty_known_hosts").write_text("")
    yield {"port": port, "key": home / "user", "known_hosts": home / "known_hosts", "empty": home / "empty_known_hosts",
           "home": home, "boards": home / "boards.yaml"}
    subprocess.run([script, "stop", str(home)], timeout=30)
    shutil.rmtree(home, ignore_errors=True)


def _cli(run, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "suite.cli", *args], cwd=run["cwd"], env=run["env"], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_export_checks_against_pytorch(smoke_run):
    out = _cli(smoke_run, "export", *smoke_run["args"], "--format", "torchscript", "onnx", "--models", "baseline", "caenet")
    assert out.returncode == 0, out.stderr[-2000:]
    folder = smoke_run["cwd"] / "artifacts" / "mnist" / "exports" / "mnist_lenet"
    for fmt in ("torchscript", "onnx"):
        manifest = json.loads((folder / fmt / "manifest.json").read_text())
        names = {m["name"] for m in manifest["models"]}
        assert names == {"baseline", "caenet", "caenet.encoder", "caenet.classifier"}
        assert all(m["max_abs_diff"] <= 1e-4 and m["checked_on"] == 64 for m in manifest["models"])
    # Each file is an MLflow LoggedModel of the export run too (issue 15, item 2; issue 27): the
    # ONNX CAE-Net loads through mlflow.pyfunc and gives the file's outputs.
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{smoke_run['cwd'] / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("caenet").experiment_id], "tags.kind = 'export'")[0]
    assert "onnx/manifest.json" in {a.path for a in client.list_artifacts(run.info.run_id, "onnx")}
    models = {m.name: m for m in client.search_logged_models(experiment_ids=[run.info.experiment_id])
              if m.source_run_id == run.info.run_id}
    assert {"onnx-caenet", "torchscript-caenet"} <= set(models)
    inputs = np.load(folder / "onnx" / "caenet.inputs.npy")
    mlflow.set_tracking_uri(uri)
    try:
        got = mlflow.pyfunc.load_model(f"models:/{models['onnx-caenet'].model_id}").predict(inputs)
    finally:
        mlflow.set_tracking_uri(None)
    got = np.asarray(next(iter(got.values())) if isinstance(got, dict) else got)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / "onnx" / "caenet.onnx"), providers=["CPUExecutionProvider"])
    assert np.allclose(got, sess.run(None, {"input": inputs})[0], atol=1e-5)
    missing = _cli(smoke_run, "export", *smoke_run["args"], "--set", "caenet.train.lr=0.123")
    assert missing.returncode == 2 and "has not finished for this config" in missing.stderr  # no such CAE-Net was trained


@pytest.mark.slow
def test_edge_bench_over_ssh(smoke_run, sshd, tmp_path):
    loop = yaml.safe_load(sshd["boards"].read_text())["boards"][0]  # as the README's script writes it
    assert loop["user"] == getpass.getuser() and loop["power"] == {"kind": "none"}
    inventory = {"boards": [
        loop,
        {**loop, "name": "closed", "port": free_port(), "connect_timeout_s": 5},
        {**loop, "name": "stranger", "known_hosts": str(sshd["empty"])},
    ], "bench": {"warmup": 2, "windows": 2, "window_queries": 20, "window_seconds": 0, "max_windows": 2}}
    boards = tmp_path / "boards.yaml"
    boards.write_text(yaml.safe_dump(inventory))
    # `caenet run --boards`: the (cached) run, then its models on the boards as `caenet edge bench` times them
    out = _cli(smoke_run, "run", REPO / "configs" / "mnist_lenet.yaml", "--smoke", "--set", "runtime.cpus_per_worker=1",
               "--boards", str(boards))
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]  # two boards failed: said, and the exit says so
    assert "failed boards: closed, stranger" in out.stderr
    lines = out.stdout.splitlines()
    closed = [l for l in lines if l.startswith("closed ")]
    assert len(closed) == 1 and "FAILED: unreachable: " in closed[0] and "connection refused" in closed[0].lower()
    assert any(l.startswith("stranger ") and "host key not in" in l for l in lines)
    summary = json.loads(next((smoke_run["cwd"] / "artifacts" / "mnist" / "edge").glob("*/edge_results.json")).read_text())
    assert set(summary["failed"]) == {"closed", "stranger"}
    got = {r["model"]: r for r in summary["rows"]}
    assert {"baseline", "caenet", "caenet.encoder", "caenet.classifier"} <= set(got)  # and the ablations' models
    for r in got.values():
        assert r["board"] == "loopback" and r["latency_p50_ms"] > 0 and len(r["window_p50_ms"]) == 2 and r["latency_p50_ms_lo"] <= r["latency_p50_ms"] <= r["latency_p50_ms_hi"] and r["inferences"] == 40
        assert r["energy_mj"] is None and r["energy_note"].startswith("N/A")  # no power source: never a guess
    assert not Path(loop["workdir"]).exists()  # the board's work folder was cleaned up
    assert summary["systems"]["loopback"]["python"] == sys.version.split()[0]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{smoke_run['cwd'] / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("caenet")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'")
    assert {r.info.run_name for r in children} == {f"loopback/{m}" for m in got}
    assert all("latency_p50_ms" in r.data.metrics and r.data.params["board"] == "loopback" for r in children)
    trained = {r.data.tags["model"]: client.get_run(r.data.tags["training_run_id"]) for r in children}
    assert trained["caenet"].info.run_name == "caenet" and trained["caenet.encoder"].info.run_name == "caenet"
    assert trained["baseline"].info.run_name == "baseline"  # each measurement links to the training that made it
    text = json.dumps([r.data.params | r.data.tags for r in children])
    assert str(sshd["key"]) not in text  # no key material or key paths in MLflow

    # The paper's tables and figures from that measurement.
    rep = _cli(smoke_run, "report", *smoke_run["args"], "--slo-ms", "20")
    assert rep.returncode == 0, rep.stderr[-3000:]
    folder = smoke_run["cwd"] / "artifacts" / "mnist" / "report" / "mnist_lenet"
    table = (folder / "table.md").read_text()
    assert table.startswith("### Table II (MNIST)") and "loopback p50 ms [95%] (speed-up [95%])" in table
    assert "| baseline (did not converge) |" in table and "(1.00x [1.00, 1.00])" in table and "| caenet" in table
    assert "N/A" in table and "pass" in table  # no power source; sub-ms latency meets a 20 ms SLO
    report = json.loads((folder / "report.json").read_text())
    assert "loopback/caenet" in report["components"]
    assert (folder / "figure1.png").stat().st_size > 0 and (folder / "figure5.png").stat().st_size > 0


def _loopback(home: Path, name: str, runtime: str, die_on_benchmark: bool = False) -> dict:
    """A loopback board whose Python logs each command it runs to ``calls.log`` (the proof of
    where a latency was measured); ``die_on_benchmark``: the board's sshd is stopped as the
    benchmark starts, and it fails (a board lost mid-sweep)."""
    script = str(REPO / "scripts" / "loopback_board.sh")
    started = subprocess.run([script, "start", str(home), name, runtime, "1"], capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr[-2000:]
    board = yaml.safe_load((home / "boards.yaml").read_text())["boards"][0]
    wrapper = home / "python"
    die = f'case "$*" in *runner.py*) kill "$(cat {home}/sshd.pid)"; exit 255;; esac\n' if die_on_benchmark else ""
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {home}/calls.log\n{die}exec {board["python"]} "$@"\n')
    wrapper.chmod(0o755)
    return {**board, "python": str(wrapper)}


def _benchmarks(home: Path) -> int:
    log = home / "calls.log"
    return sum("runner.py" in line for line in log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.slow
def test_sweep_decides_the_slo_on_a_board(smoke_run, tmp_path):
    """Issue 25's 'done when': a sweep with --boards and slo.board picks from the board's
    latencies (one Ray actor per board); a re-run measures nothing it has; a board lost
    mid-sweep is N/A, the sweep finishes and exits 1 naming it, and the next run measures only
    what that board is missing."""
    homes = {name: Path(tempfile.mkdtemp(prefix=f"b{name}", dir="/tmp")) for name in ("pi", "nano")}
    bench = {"warmup": 5, "windows": 3, "window_queries": 30, "window_seconds": 0, "max_windows": 3}
    boards = tmp_path / "boards.yaml"
    sweep = tmp_path / "sweep.yaml"
    # one trial whose stages the smoke run has cached: what is tested is where it is timed
    sweep.write_text(f"""name: board-sweep
experiment: {REPO / 'configs' / 'mnist_lenet.yaml'}
set: [runtime.cpus_per_worker=1]
space: {{caenet.ablations: [[no_transfer]]}}
scheduler: {{type: fifo}}
slo: {{speedup: 0.5}}
""")
    script = str(REPO / "scripts" / "loopback_board.sh")
    try:
        inventory = [_loopback(homes["pi"], "pi", "torch"), _loopback(homes["nano"], "nano", "onnxruntime", die_on_benchmark=True)]
        boards.write_text(yaml.safe_dump({"boards": inventory, "bench": bench}))
        args = ["sweep", str(sweep), "--smoke", "--boards", str(boards), "--set", "slo.board=pi"]
        first = _cli(smoke_run, *args)
        assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
        assert "board nano failed: benchmark: exit 255" in first.stderr
        summary = json.loads(sorted((smoke_run["cwd"] / "artifacts" / "mnist" / "sweeps").glob("*board-sweep/sweep_summary.json"))[-1].read_text())
        assert summary["slo_decided_on"] == "board pi" and summary["chosen"] is not None and set(summary["failed_boards"]) == {"nano"}
        (row,) = summary["trials"]
        pi, here, nano = row["boards"]["pi"], row["boards"]["this machine"], row["boards"]["nano"]
        assert row["board"] == "pi" and row["p50_ms"] == pi["p50_ms"] != here["p50_ms"] and not row["latency_cached"]
        assert pi["p50_ms_lo"] <= pi["p50_ms"] <= pi["p50_ms_hi"] and pi["p90_ms_lo"] <= pi["p90_ms"] <= pi["p90_ms_hi"]
        assert pi["speedup_lo"] <= pi["speedup"] <= pi["speedup_hi"] and pi["meets_slo"]
        assert nano["p50_ms"] != nano["p50_ms"] and not nano["meets_slo"]  # N/A, never a guess
        assert _benchmarks(homes["pi"]) == 1 and _benchmarks(homes["nano"]) == 1  # measured there, each once
        assert "| run_trial_" in summary["table"] and "N/A: benchmark: exit 255" in summary["table"]

        inventory[1] = _loopback(homes["nano"], "nano", "onnxruntime")  # back (a new sshd, on a new port)
        boards.write_text(yaml.safe_dump({"boards": inventory, "bench": bench}))
        second = _cli(smoke_run, *args)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "[pi] 1 of 1 architecture(s) from the measurement cache" in second.stdout
        summary = json.loads(sorted((smoke_run["cwd"] / "artifacts" / "mnist" / "sweeps").glob("*board-sweep/sweep_summary.json"))[-1].read_text())
        (row,) = summary["trials"]
        assert row["latency_cached"] and row["p50_ms"] == pi["p50_ms"] and not row["boards"]["nano"]["cached"]
        assert _benchmarks(homes["pi"]) == 1 and _benchmarks(homes["nano"]) == 2  # only what was missing
        assert summary["boards"]["nano"]["measured"] == 1 and summary["boards"]["pi"]["from_cache"] == 1
        assert summary["boards"]["pi"]["system"]["runtime_version"] and summary["boards"]["nano"]["system"]["cpu"]

        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{smoke_run['cwd'] / 'mlruns' / 'mlflow.db'}")
        trial = client.get_run(row["extra"]["mlflow_run_id"])
        assert trial.data.metrics["latency_p50_ms.pi"] == pytest.approx(pi["p50_ms"]) and "latency_p90_ms.nano" in trial.data.metrics
        assert trial.data.tags["slo_decided_on"] == "pi" and trial.data.tags["board.nano.runtime_version"]
    finally:
        for home in homes.values():
            subprocess.run([script, "stop", str(home)], timeout=30)
            shutil.rmtree(home, ignore_errors=True)
