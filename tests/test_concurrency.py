"""Two runs at once on one machine (issue 14, item 15): one local Ray per machine, so a second
run waits for the first with one line naming it; a stage another process is running is waited
for, then reused, never trained twice into one cache folder; a killed holder blocks nobody."""

import fcntl
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from suite.distributed.ray_runtime import local_ray_lock
from suite.pipeline.stage import StageRunner
from tests.test_cli_e2e import REPO


def test_a_stage_another_process_runs_is_waited_for_then_reused(tmp_path):
    lines: list[str] = []
    runner = StageRunner(tmp_path / "cache", None, log=lines.append)
    calls = []
    body = lambda work, run_id: calls.append(1) or {"x": 1}  # noqa: E731
    first = runner.run("stage", 1, {"a": 1}, [], body)  # done once: now a second run finds it
    lock_file = first.path.with_name(first.path.name + ".lock")
    with open(lock_file, "a") as other_process:  # another open file: the lock conflicts as another process's would
        fcntl.flock(other_process, fcntl.LOCK_EX)
        result = {}
        waiter = threading.Thread(target=lambda: result.update(r=runner.run("stage", 1, {"a": 1}, [], body)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()  # waits while the other holds the stage
        fcntl.flock(other_process, fcntl.LOCK_UN)
        waiter.join(timeout=10)
    assert any(line == f"[stage] waiting: another run is running this stage ({lock_file})" for line in lines), lines
    assert result["r"].cached and calls == [1]  # trained once


def test_a_second_local_ray_waits_naming_the_first(tmp_path, capsys):
    lock = tmp_path / "local-ray.lock"
    entered = threading.Event()

    def second_run():
        with local_ray_lock(lock):
            entered.set()

    with local_ray_lock(lock):
        second = threading.Thread(target=second_run, daemon=True)
        second.start()
        time.sleep(0.5)
        assert not entered.is_set()
    second.join(timeout=10)
    assert entered.is_set()
    out = capsys.readouterr().out
    assert f"caenet: waiting for caenet run pid {os.getpid()}" in out and "to finish" in out


@pytest.mark.slow
def test_ctrl_c_then_two_runs_at_once(tmp_path, data_root):
    """SIGINT just as the first trainings start: exit 130 with the resume line, promptly, no
    second local Ray (a stage thread used to start one and train on in it for minutes), and an
    MLflow record with nothing left RUNNING. Then two runs of the same config at once in that
    folder: the interrupted run's locks and partial stages block neither; one waits for the
    other's local Ray, every stage is trained once and reused by the other, and both report
    the same numbers. The first runs with -v (Ray's worker output on its console), the
    second without."""
    import shutil
    import signal
    import tempfile

    from mlflow.tracking import MlflowClient

    # Ray's own folder for this run (short: Ray's socket paths are capped at 107 bytes), to count
    # the Ray sessions it started.
    ray_tmp = Path(tempfile.mkdtemp(prefix="cr", dir="/tmp"))
    env = {**os.environ, "CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO),
           "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "suite.cli", "run", str(REPO / "configs" / "mnist_lenet.yaml"), "--smoke",
            "--set", "caenet.ablations=[]", "--set", "autoencoder.compare_unclustered=false", "--set", "runtime.progress=false"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "[baseline] running" in line:
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            break
    try:
        rest = proc.communicate(timeout=60)[0]  # a bound on a hang, not a speed target
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not end within 60 s of Ctrl-C")
    assert proc.returncode == 130, rest[-2000:]
    assert "interrupted; finished stages are kept" in rest
    sessions = list((ray_tmp / "ray").glob("session_2*"))
    assert len(sessions) <= 1, sessions  # no second local Ray after the interrupt
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("caenet").experiment_id])
    status = {r.info.run_name: r.info.status for r in runs}
    assert "RUNNING" not in status.values(), status
    assert status["mnist_lenet"] == "KILLED" and status["baseline"] == "KILLED", status  # finished ones stay FINISHED
    left = {p.name.rsplit("-", 1)[0] for p in (tmp_path / "artifacts" / "mnist").glob("*.partial")}
    assert "baseline" in left and list((tmp_path / "artifacts" / "mnist").glob("baseline-*.lock"))

    first = subprocess.Popen([*args, "--summary", "one.json", "-v"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    second = subprocess.Popen([*args, "--summary", "two.json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    out_one, _ = first.communicate(timeout=600)
    out_two, _ = second.communicate(timeout=600)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert first.returncode == 0 and second.returncode == 0, (out_one + out_two)[-3000:]
    both = out_one + out_two
    assert "caenet: waiting for caenet run pid" in both  # one waited for the other's local Ray
    for stage in ("baseline", "autoencoder", "caenet", "evaluate"):
        assert both.count(f"[{stage}] running ->") == 1, stage  # trained once, reused by the other
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert one["caenet"]["test_acc"] == two["caenet"]["test_acc"]
    assert not list(Path(tmp_path, "artifacts", "mnist").glob("*.partial"))  # the interrupted baseline resumed and finished
    # the console: the run that trained printed its epochs itself; with -v (the first run, which
    # starts a second earlier and so almost always trains), the workers' own output too, under
    # Ray's "(task pid=...)" prefix (test_cli_e2e checks a plain run's console)
    trained = out_one if "[baseline] running ->" in out_one else out_two
    assert "[baseline] epoch 1/1  train_loss=" in trained
    if trained is out_one:
        assert "pid=" in out_one and "Ray: worker logs in" not in out_one


@pytest.mark.slow
def test_ctrl_c_at_any_moment_is_one_line(tmp_path, data_root):
    """Ctrl-C at random moments of a smoke run, each time the same command resumes, until one
    finishes: importing, starting Ray, reading the store, training, writing a checkpoint,
    evaluating. Sent to the process, or to its whole group as a terminal sends it. Each
    interrupted run ends with the one resume line, never a traceback (one held-out run printed
    three: a KeyboardInterrupt in scikit-learn's import, another in SQLAlchemy, then a closed
    SQLite database); the last run finishes the work."""
    import signal

    env = {**os.environ, "CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "suite.cli", "run", str(REPO / "configs" / "mnist_lenet.yaml"), "--smoke",
            "--set", "caenet.ablations=[]", "--set", "autoencoder.compare_unclustered=false", "--set", "runtime.progress=false"]
    rng, interrupted = random.Random(0), []  # the same moments on every run of the test
    for attempt in range(5):  # later and later moments (each run redoes start-up), then one run to the end
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        delay = rng.uniform(0.3, 4.0) + 5 * attempt if attempt < 4 else 600
        try:
            out = proc.communicate(timeout=delay)[0]
        except subprocess.TimeoutExpired:
            if attempt % 2:
                os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group
            else:
                proc.send_signal(signal.SIGINT)
            try:
                out = proc.communicate(timeout=60)[0]  # a bound on a hang, not a speed target
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"attempt {attempt}: the run did not end within 60 s of Ctrl-C at {delay:.1f} s")
        assert "Traceback" not in out and "Exception in thread" not in out, f"Ctrl-C at {delay:.1f} s:\n{out[-4000:]}"
        # -SIGINT: the run had finished its work and the interpreter was past its own signal
        # handling (the default action ends it, silently); the next attempt then finds it all cached
        assert proc.returncode in (0, 130, -signal.SIGINT), out[-2000:]
        if proc.returncode != 130:
            assert "MLflow run: " in out, out[-2000:]  # it had finished
            break
        assert out.rstrip().endswith("caenet: interrupted; finished stages are kept, run the same command again to resume"), out[-2000:]
        interrupted.append(round(delay, 1))
    assert proc.returncode != 130 and "test accuracy" in out, (interrupted, out[-2000:])
    assert len(interrupted) >= 3, interrupted  # several moments were hit, not one
