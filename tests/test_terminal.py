"""What a person sees on a real terminal: rows as tmux shows them, captured without joining
wrapped rows (``-J``) and without stripping, at 80 and 160 columns.

A fake terminal in a test did not show it; a real one did: a stage's done line printed while
progress bars were on screen landed where the cursor sat on a bar's row, a ``[`` left at the
end of that row and the rest overdrawn by the next bar (``suite/console.py`` lifts the bars
around every printed line). ``-J`` hid it: joined rows read whole (PITFALLS.md, Terminals)."""

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
pytestmark = pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed (scripts/setup.sh)")
BAR = re.compile(r"\b(\d{1,3})%\|")

# Three trainings side by side as the pipeline's stage threads show them (running line, bar,
# epoch lines, done line), through the same console and display the driver uses: the bars are
# on screen whenever a line is printed.
SIDE_BY_SIDE = '''
import threading, time
from suite.console import lines_through_bars
from suite.distributed.progress import display

def stage(name, steps, pause):
    print(f"[{name}] running -> /cache/{name}-0123456789abcdef")
    for epoch in (1, 2):
        for step in range(1, steps + 1):
            display.progress(f"[{name}]", {"epochs": 2, "steps": steps, "epoch": epoch, "step": step, "loss": 1 / step,
                                           "images_per_second": 1000.0, "left_s": 1.0})
            time.sleep(pause)
        display.epoch(f"[{name}]", 2, {"epoch": epoch, "train_loss": 0.5, "val_acc": 0.9, "epoch_seconds": 0.1})
    display.done(f"[{name}]")
    print(f"[{name}] done in {2 * steps * pause:.1f}s")

with lines_through_bars():
    # the bar drawn second (one row down) finishes last, as the clustered CAE's did in the main
    # job: closed, it left the cursor at the end of its row, where the next line then began
    threads = [threading.Thread(target=stage, args=a) for a in
               (("baseline", 40, 0.01), ("caenet_no_transfer", 25, 0.03), ("autoencoder", 60, 0.005))]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    print("test accuracy  98.00%")
'''


def _screen(tmp_path: Path, command: str, columns: int, env: dict, timeout: float) -> tuple[int, list[str]]:
    """Run ``command`` in a tmux window of ``columns``; its exit code and every row of the screen
    and scroll-back as tmux holds them (a wrapped line is two rows), blank rows dropped."""
    server, done = f"caenet-test-{os.getpid()}-{columns}", tmp_path / f"exit-code-{columns}"
    (tmp_path / "tmux.conf").write_text("set -g history-limit 100000\n")
    tmux = ["tmux", "-L", server, "-f", str(tmp_path / "tmux.conf")]
    subprocess.run([*tmux, "new-session", "-d", "-x", str(columns), "-y", "40", "-c", str(tmp_path),
                    f"{command}; echo $? > {done}; sleep 600"], env={**env, "TERM": "xterm"}, check=True)
    try:
        deadline = time.monotonic() + timeout
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(0.5)  # the last redraw
        screen = subprocess.run([*tmux, "capture-pane", "-p", "-S", "-", "-E", "-"], env=env, capture_output=True,
                                text=True, check=True).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], env=env, capture_output=True)
    rows = [row.rstrip() for row in screen.splitlines() if row.strip()]
    assert done.exists(), "\n".join(rows[-40:])
    return int(done.read_text()), rows


def _whole(rows: list[str], columns: int) -> list[str]:
    """Every row that holds a done line starts with it; no row ends in a stray ``[``; no bar is
    left part-way (``leave=False`` bars are wiped when they close). Returns the done rows."""
    shown = "\n".join(rows[-60:])
    assert all(len(row) <= columns for row in rows)
    done = [row for row in rows if "] done in" in row]
    assert done, shown
    assert all(row.startswith("[") and re.fullmatch(r"\[\w+\] done in [0-9.]+s", row) for row in done), done
    assert not [row for row in rows if row.endswith("[")], shown
    left = [row for row in rows if (m := BAR.search(row)) and int(m.group(1)) < 100]
    assert not left, left
    return done


@pytest.mark.parametrize("columns", [80, 160])
def test_lines_printed_while_bars_run_side_by_side_stay_whole(tmp_path, columns):
    (tmp_path / "side_by_side.py").write_text(SIDE_BY_SIDE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code, rows = _screen(tmp_path, f"{sys.executable} {tmp_path / 'side_by_side.py'}", columns, env, timeout=60)
    assert code == 0, "\n".join(rows[-40:])
    assert sorted(_whole(rows, columns)) == ["[autoencoder] done in 0.6s", "[baseline] done in 0.8s",
                                             "[caenet_no_transfer] done in 1.5s"]
    assert sum(row.startswith("[baseline] epoch ") for row in rows) == 2 and rows[-1] == "test accuracy  98.00%"


@pytest.mark.slow  # the smoke pipeline: Ray
def test_the_smoke_run_on_a_real_terminal_shows_whole_lines(tmp_path, data_root):
    """The main job itself at 80 columns: its trainings run side by side (two bars at once)."""
    env = {**os.environ, "CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    command = (f"{sys.executable} -m suite.cli run {REPO / 'configs' / 'mnist_lenet.yaml'} --smoke "
               f"--set runtime.cache_dir={tmp_path / 'artifacts'} --set runtime.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}")
    code, rows = _screen(tmp_path, command, 80, env, timeout=300)
    assert code == 0, "\n".join(rows[-40:])
    assert {row.split("]")[0] + "]" for row in _whole(rows, 80)} >= {"[baseline]", "[autoencoder]", "[caenet]", "[evaluate]"}
    assert any(row.startswith("Ray: worker logs in ") for row in rows)
    assert any(row.startswith("test accuracy") for row in rows)  # the summary table, whole


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
