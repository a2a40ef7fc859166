"""The main job on a real terminal: the smoke pipeline under tmux at 160 columns, its whole
screen (scroll-back included) captured and read line by line.

A fake terminal in a test did not show it; a real one did: a stage's done line printed while
a progress bar was on screen was cut in two, a ``[`` left at the end of the bar's line
(``suite/console.py`` routes every printed line through tqdm now)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed (scripts/setup.sh)")]
BAR = re.compile(r"\b(\d{1,3})%\|")


def test_the_smoke_run_on_a_real_terminal_shows_whole_lines(tmp_path, data_root):
    server, done = f"caenet-test-{os.getpid()}", tmp_path / "exit-code"
    (tmp_path / "tmux.conf").write_text("set -g history-limit 100000\n")
    env = {**os.environ, "CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO), "TERM": "xterm"}
    env.pop("RAY_ADDRESS", None)
    command = (f"{sys.executable} -m suite.cli run {REPO / 'configs' / 'mnist_lenet.yaml'} --smoke "
               f"--set runtime.cache_dir={tmp_path / 'artifacts'} --set runtime.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}; "
               f"echo $? > {done}; sleep 600")
    tmux = ["tmux", "-L", server, "-f", str(tmp_path / "tmux.conf")]
    subprocess.run([*tmux, "new-session", "-d", "-x", "160", "-y", "40", "-c", str(tmp_path), command], env=env, check=True)
    try:
        deadline = time.monotonic() + 300
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(0.5)  # the last redraw
        # -J: lines the terminal wrapped are joined (a real newline is not), so a cut line shows as two
        screen = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-S", "-", "-E", "-"], env=env, capture_output=True,
                                text=True, check=True).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], env=env, capture_output=True)
    assert done.exists() and done.read_text().strip() == "0", screen[-3000:]
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    done_lines = [line for line in lines if "] done in" in line]
    assert done_lines, screen[-3000:]
    assert all(line.startswith("[") for line in done_lines), done_lines
    assert not [line for line in lines if line.endswith("[")], screen[-3000:]
    assert any(line.startswith("Ray: worker logs in ") for line in lines)
    assert any(line.startswith("test accuracy") for line in lines)  # the summary table, whole
    # no bar of a finished stage left part-way (leave=False bars are wiped when they close)
    left = [line for line in lines if (m := BAR.search(line)) and int(m.group(1)) < 100]
    assert not left, left


def test_the_summary_says_more_for_more_and_names_its_ablations():
    """It said `parameters: 0.949x fewer` for a CAE-Net with more parameters than LeNet, and
    `transfer only n/a` without saying what or why."""
    from suite.report.summary import table

    def summary(ratio, no_kd, alpha):
        side = {"test_acc": 0.98, "latency_p50_ms": 0.1, "parameters": 90806, "size_bytes": 4096}
        return {"baseline": side, "caenet": side, "speedup_p50": 1.3, "parameter_ratio": ratio, "clusters_per_class_mean": 1.0,
                "reconstruction_mse": {"clustered": None, "unclustered": 0.01}, "caenet_kd": {"temperature": 10, "alpha": alpha},
                "accuracy_transfer": {"with_transfer_kd": 0.987, "no_kd": no_kd, "no_transfer": None}}

    more = table(summary(90806 / 95682, None, 0.0))
    assert "parameters: 1.05x more than the baseline" in more and "fewer" not in more
    assert "this run's 98.70% | without KD = this run's (it uses no KD) | trained from scratch n/a (not trained: add " \
           "no_transfer to caenet.ablations)" in more
    fewer = table(summary(2.0, 0.9855, 0.1))
    assert "parameters: 2x fewer than the baseline" in fewer and "without KD 98.55%" in fewer
