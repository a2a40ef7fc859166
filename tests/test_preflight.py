"""What the suite leans on, checked before any stage (issue 29): a dead tracking server, a Ray
head that is not there, a tracking file that is not a database, a storage that is a file and a
cache disk without room each stop the run in seconds with one line naming the setting, before
any stage starts; a disk that fills mid-run is one line too, and no stage is marked finished."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

CONFIG = str(REPO / "configs" / "mnist_lenet.yaml")


def _refused(cli, tmp_path, *extra):
    t0 = time.time()
    done = cli(["run", CONFIG, "--smoke", *extra])
    took = time.time() - t0
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [l for l in done.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("caenet: error: ") and "Traceback" not in done.stderr, done.stderr
    assert not list((tmp_path / "artifacts").glob("mnist/*-*/_SUCCESS")) and took < 30, took
    return lines[0]


def test_a_dead_tracking_server(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    line = _refused(cli, tmp_path)
    assert "MLFLOW_TRACKING_URI http://127.0.0.1:" in line and "no MLflow server answered" in line and "mlflow server" in line


def test_no_ray_head_at_ray_address(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    line = _refused(cli, tmp_path)
    assert "RAY_ADDRESS 127.0.0.1:" in line and "no Ray head answers there (connection refused)" in line


def test_a_tracking_file_that_is_not_a_database(cli, tmp_path):
    bad = tmp_path / "mlflow.db"
    bad.write_text("these are notes, not a database\n")
    line = _refused(cli, tmp_path, "--set", f"runtime.tracking_uri=sqlite:///{bad}")
    assert "runtime.tracking_uri" in line and "is not an SQLite database" in line
    assert bad.read_text().startswith("these are notes")  # left as it was


def test_a_storage_that_is_a_file(cli, tmp_path):
    (tmp_path / "ckpt").write_text("")
    line = _refused(cli, tmp_path, "--set", f"runtime.storage={tmp_path / 'ckpt'}")
    assert "runtime.storage" in line and "is a file, not a folder" in line


needs_mounts = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare for a tmpfs")


def _on_small_disk(tmp_path, size: str, *args: str, timeout: float = 300):
    """``caenet run`` in a mount namespace where ``tmp_path/disk`` is a tmpfs of ``size``."""
    disk = tmp_path / "disk"
    disk.mkdir()
    caenet = f"{sys.executable} -m suite.cli run {CONFIG} --smoke --set runtime.cache_dir={disk} " + " ".join(args)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    return disk, subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {disk} && exec {caenet}"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


@needs_mounts
def test_a_cache_disk_without_room_stops_before_any_stage(tmp_path, data_root):
    t0 = time.time()
    disk, done = _on_small_disk(tmp_path, "2m")
    assert done.returncode == 2 and time.time() - t0 < 30, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("caenet: error: runtime.cache_dir") and "MiB free, under runtime.min_free_mb (200)" in line


@needs_mounts
@pytest.mark.slow
def test_a_disk_that_fills_mid_run_is_one_line_and_marks_nothing_finished(tmp_path, data_root):
    """1 MiB: the data check passes, the baseline's checkpoint does not fit."""
    disk, done = _on_small_disk(tmp_path, "1m", "--set", "runtime.min_free_mb=0")
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in out, out[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert "no space left on device" in line and "runtime.cache_dir" in line, line
    assert "retry" not in out  # a full disk is not retried
    assert not list(Path(disk).glob("mnist/*/_SUCCESS"))  # the mount is gone with the namespace; nothing was marked there
