"""Two runs at once on one machine (issue 14, item 15): one local Ray per machine, so a second
run waits for the first with one line naming it; a stage another process is running is waited
for, then reused, never trained twice into one cache folder; a killed holder blocks nobody."""

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from suite.distributed.session import local_ray_lock
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
def test_two_runs_of_one_config_at_once(tmp_path, data_root):
    env = {**os.environ, "CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled"}
    args = [sys.executable, "-m", "suite.cli", "run", str(REPO / "configs" / "mnist_lenet.yaml"), "--smoke",
            "--set", "caenet.ablations=[]", "--set", "autoencoder.compare_unclustered=false"]
    first = subprocess.Popen([*args, "--summary", "one.json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    second = subprocess.Popen([*args, "--summary", "two.json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    out_one, _ = first.communicate(timeout=600)
    out_two, _ = second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (out_one + out_two)[-3000:]
    both = out_one + out_two
    assert "caenet: waiting for caenet run pid" in both  # one waited for the other's local Ray
    for stage in ("baseline", "autoencoder", "caenet", "evaluate"):
        assert both.count(f"[{stage}] running ->") == 1, stage  # trained once, reused by the other
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert one["caenet"]["test_acc"] == two["caenet"]["test_acc"]
    assert not list(Path(tmp_path, "artifacts", "mnist").glob("*.partial"))
