"""A tracking store that stops answering mid-run (issue 29) fails no stage and no training: the
stage runner's calls warn once and go on, and the epochs a training could not log are kept and
sent once the store answers again. The outage is real: the SQLite store's file is moved away."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite import tracking_store
from suite.config import RuntimeConfig
from suite.distributed import relay
from suite.pipeline.tracking import Tolerant, Tracker
from tests.conftest import REPO, free_port

CONFIG = str(REPO / "configs" / "mnist_lenet.yaml")


def _outage(db: Path):
    """Move the store away (the path becomes a folder SQLite cannot open); returns the undo."""
    away = db.with_name("away.db")
    db.rename(away)
    db.mkdir()
    return lambda: (db.rmdir(), away.rename(db))


def test_a_stage_record_goes_on_through_an_outage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(RuntimeConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    parent = tracker.start_parent("run", {}, {})
    lines: list[str] = []
    tolerant = Tolerant(tracker, lines.append)
    child = tolerant.start_child("stage", {"a": 1}, {})
    back = _outage(tmp_path / "mlflow.db")
    assert tolerant.log_metrics(child, {"x": 1.0}) is None and tolerant.end(child) is None  # no exception
    assert len(lines) == 1 and "did not answer" in lines[0] and "incomplete" in lines[0]
    back()
    tolerant.log_metrics(child, {"x": 2.0})  # known down: not asked again for RETRY_DOWN_S (each try costs seconds)
    assert len(lines) == 1 and "x" not in tracker.client.get_run(child).data.metrics
    from suite import tracking_store

    monkeypatch.setattr(tracking_store, "RETRY_DOWN_S", 0.0)  # the window over: the next call asks again
    tolerant.log_metrics(child, {"x": 3.0})
    assert lines[-1].endswith("answers again") and tracker.client.get_run(child).data.metrics["x"] == 3.0
    tracker.end(parent)


def test_epochs_missed_while_down_are_logged_when_the_store_is_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(RuntimeConfig(tracking_uri=uri))
    run = tracker.start_parent("training", {}, {})
    monkeypatch.setattr(tracking_store, "RETRY_DOWN_S", 0.0)  # try at every epoch (30 s between tries by default)
    logger = relay.EpochLogger(uri, run)
    logger({"epoch": 1, "train_loss": 1.0})
    back = _outage(tmp_path / "mlflow.db")
    logger({"epoch": 2, "train_loss": 0.5})  # the store is gone: kept, the training goes on
    logger({"epoch": 3, "train_loss": 0.25})
    assert not logger.flush()
    back()
    assert logger.flush()
    steps = {m.step: m.value for m in tracker.client.get_metric_history(run, "train_loss")}
    assert steps == {1: 1.0, 2: 0.5, 3: 0.25}


def test_a_run_whose_store_is_gone_at_its_end_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(RuntimeConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    run = tracker.start_parent("run", {}, {})
    with tracker.closing(run):
        back = _outage(tmp_path / "mlflow.db")  # gone while the command works
    assert "could not record the end (FINISHED) of run" in capsys.readouterr().err
    back()
    assert tracker.client.get_run(run).info.status == "RUNNING"  # what the store last heard; the line said why


@pytest.mark.slow
def test_a_tracking_server_killed_and_a_storage_gone_mid_run(tmp_path, data_root):
    """Against a real ``mlflow server`` (issue 29): killed while the baseline trains, it fails
    neither the training nor the stage, and the run says once that the store stopped
    answering. Then ``runtime.storage`` turns into a file while the CAE trains: that stage
    fails in one line, no traceback, nothing of it marked finished, and the run says it could
    not record its end (the server is still down). With the store read directly and
    the storage a folder again, the same command plans to reuse every finished stage."""
    import signal
    import socket

    port = free_port()
    env = {**os.environ, "CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}

    def server() -> subprocess.Popen:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                                 "--artifacts-destination", str(tmp_path / "mlartifacts")],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return proc
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("mlflow server did not start")
                time.sleep(0.3)

    storage = tmp_path / "storage"
    args = [sys.executable, "-m", "suite.cli", "run", CONFIG, "--smoke", "--set", f"runtime.cache_dir={tmp_path / 'artifacts'}",
            "--set", f"runtime.storage={storage}", "--set", "runtime.progress=false", "--set", "caenet.ablations=[]",
            "--set", "autoencoder.compare_unclustered=false", "--set", "autoencoder.train.epochs=3", "--set", "autoencoder.train.batch_size=8"]
    mlflow = server()
    try:
        run = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out: list[str] = []
        t0 = time.time()
        for line in run.stdout:
            out.append(f"{time.time() - t0:6.1f} {line}")
            if "[baseline] running ->" in line:  # the store goes away while the baseline trains
                os.killpg(mlflow.pid, signal.SIGKILL)
                mlflow.wait()
            if "[autoencoder] running ->" in line:  # the storage goes away while the CAE trains
                shutil.rmtree(storage, ignore_errors=True)
                storage.write_text("not a folder any more")
        run.wait(timeout=600)
        text = "".join(out)
        assert run.returncode != 0 and "Traceback" not in text, text[-4000:]
        assert "did not answer" in text and "runtime.storage" in text, text[-3000:]
        assert "could not record the end (FAILED)" in text, text[-3000:]
        done = {p.name.rsplit("-", 1)[0] for p in (tmp_path / "artifacts" / "mnist").glob("*-*") if (p / "_SUCCESS").exists()}
        assert {"baseline", "entropy", "features", "clustering", "targets"} <= done and "autoencoder" not in done, done

        # the storage a folder again, the store read directly: every finished stage is cached, the CAE would run
        storage.unlink()
        plan = subprocess.run([*args, "--dry-run"], cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
                              capture_output=True, text=True, timeout=300)
        assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
        lines = {l.split()[0]: l for l in plan.stdout.splitlines() if l.strip()}
        assert all("cached" in lines[s] for s in ("baseline", "entropy", "features", "clustering", "targets")), plan.stdout
        assert "would run" in lines["autoencoder"], plan.stdout
    finally:
        if mlflow.poll() is None:
            os.killpg(mlflow.pid, signal.SIGKILL)
