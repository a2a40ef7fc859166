"""Bad input of every kind, fed to the real CLI: exit code 2, one line naming the key, path or
board and the fix, no traceback (issue 14). ``--debug`` shows the traceback.

Most cases run the CLI's ``main`` in this process (``cli``): each fails before any work, and a
fresh process per case would mostly time torch's import. The process-level behaviour (exit
code and stderr of ``python -m suite.cli``) is checked by a few cases run as a process."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Payload

REPO = Path(__file__).resolve().parents[1]
MNIST = str(REPO / "configs" / "mnist_lenet.yaml")


def caenet(args, tmp_path, data_root, timeout=120):
    env = {**os.environ, "CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "suite.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_line(out, *expected: str) -> str:
    """The error is the last line of stderr; nothing but argparse's usage line may precede it."""
    assert out.returncode == 2, out.stdout[-1000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [l for l in out.stderr.splitlines() if l.strip() and not l.startswith(("usage:", "       "))]
    assert len(lines) == 1, out.stderr[-2000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_empty_config_file(tmp_path, data_root):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    one_line(caenet(["run", str(empty)], tmp_path, data_root), str(empty), "config file is empty")


def test_unknown_model_is_caught_when_the_config_loads(tmp_path, data_root):
    out = caenet(["run", MNIST, "--set", "baseline.model=alexnett"], tmp_path, data_root)
    one_line(out, "baseline.model: unknown model 'alexnett'", "registered:", "lenet")
    assert "MLflow run" not in out.stdout  # nothing started
    bad = caenet(["compare", MNIST, "--set", "compare.methods=[{name: S, kind: kd, model: lenet_kdd}]"], tmp_path, data_root)
    one_line(bad, "compare.methods['S'].model: unknown model 'lenet_kdd'")


@pytest.mark.parametrize("spec, says", [("{randint: [5, 1]}", "range [5, 1] is empty"),
                                        ("{uniform: [0.5, 0.5]}", "range [0.5, 0.5] is empty"),
                                        ("{loguniform: [0, 1]}", "positive low bound"),
                                        ("{randint: [1.5, 4]}", "must be integers")])
def test_empty_or_inverted_search_range(tmp_path, spec, says, cli):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"experiment: {MNIST}\nspace:\n  clustering.k: {spec}\n")
    one_line(cli(["sweep", str(sweep)]), "space", "clustering.k", says)


def test_unknown_dataset_in_data_check(tmp_path, cli):
    one_line(cli(["data", "check", "mnistt"]), "unknown dataset 'mnistt'", "known: mnist, fashion-mnist")


def test_unwritable_summary_path_fails_before_the_run(tmp_path, cli):
    out = cli(["run", MNIST, "--smoke", "--summary", "/dev/null/x/summary.json",
                  "--set", f"runtime.cache_dir={tmp_path / 'artifacts'}"])
    one_line(out, "--summary /dev/null/x/summary.json: cannot be written")
    assert not (tmp_path / "artifacts").exists() and "MLflow run" not in out.stdout


def test_export_needs_at_least_one_image(tmp_path, cli):
    one_line(cli(["export", MNIST, "--images", "0"]), "--images", "must be at least 1")


def test_report_with_a_missing_edge_file(tmp_path, cli):
    one_line(cli(["report", MNIST, "--edge", str(tmp_path / "missing.json")]),
             "--edge", "missing.json: no such file")


def _boards(tmp_path, **extra) -> Path:
    entry = {"name": "loopback", "host": "127.0.0.1", "user": "nobody", **extra}
    inline = ", ".join(f"{k}: {v}" for k, v in entry.items())
    path = tmp_path / "boards.yaml"
    path.write_text(f"boards:\n  - {{{inline}}}\n")
    return path


def test_edge_bench_with_an_unknown_board_name(tmp_path, cli):
    boards = _boards(tmp_path)
    one_line(cli(["edge", "bench", MNIST, "--boards", str(boards), "--only", "loopbak"]),
             "--only loopbak: no such board", "its boards: loopback")


def test_edge_bench_with_a_missing_key_file(tmp_path, cli):
    boards = _boards(tmp_path, key_file=str(tmp_path / "no_key"))
    one_line(cli(["edge", "bench", MNIST, "--boards", str(boards)]),
             "board 'loopback'", f"key_file {tmp_path / 'no_key'} does not exist")


def test_an_old_boards_file_names_the_keys_that_replaced_its_own(tmp_path, cli):
    """The boards file of the first edge release (`bench: {rounds, min_runs, min_seconds}`)."""
    boards = _boards(tmp_path)
    boards.write_text(boards.read_text() + "bench: {rounds: 2, min_runs: 20, min_seconds: 0.1}\n")
    one_line(cli(["edge", "bench", MNIST, "--boards", str(boards)]), "bench.rounds: renamed: use bench.windows",
             "bench.min_runs: renamed: use bench.window_queries", "bench.min_seconds: renamed: use bench.window_seconds")


def test_debug_shows_the_traceback(tmp_path, data_root):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    out = caenet(["--debug", "run", str(empty)], tmp_path, data_root)
    assert out.returncode == 2 and "Traceback" in out.stderr and "config file is empty" in out.stderr.splitlines()[-1]


def test_a_crafted_model_file_is_refused_by_name_and_never_runs(tmp_path):
    from suite.config import ConfigError
    from suite.stages.trained import load_model

    payload = Payload(tmp_path / "ran")
    weights = tmp_path / "model.pt"
    with open(weights, "wb") as f:
        pickle.dump({"conv.weight": payload}, f)
    with pytest.raises(ConfigError, match=f"{weights}: not a plain tensor file, refused") as err:
        load_model("lenet", {"in_channels": 1, "image_size": 28}, weights)
    assert "\n" not in str(err.value) and not payload.flag.exists()


def test_a_crafted_cifar_batch_is_refused_and_never_runs(tmp_path):
    """CIFAR's own format is a pickle: only dicts, lists, bytes and numpy arrays are built from it."""
    import numpy as np

    from suite.data import DataError
    from suite.data.formats import unpickle_arrays as _unpickle

    payload = Payload(tmp_path / "ran")
    batch = tmp_path / "data_batch_1"
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": payload}, f)
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR batch") as err:
        _unpickle(batch)
    assert "\n" not in str(err.value) and not payload.flag.exists()
    with open(batch, "wb") as f:  # the real shape of a batch still loads
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2], "batch_label": b"x"}, f)
    assert _unpickle(batch)["labels"] == [1, 2]




def test_use_gpu_yes_without_a_gpu_stops_before_anything(tmp_path, cli, monkeypatch):
    """It used to print `[baseline] running` and wait for ever for a GPU no node has."""
    import ray
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # as on CI, also where a GPU is
    out = cli(["run", MNIST, "--smoke", "--set", "runtime.use_gpu=yes", "--set", f"runtime.cache_dir={tmp_path / 'artifacts'}"])
    one_line(out, "runtime.use_gpu is yes, but this machine has 0 GPU(s)", "or set runtime.use_gpu=auto")
    assert not (tmp_path / "artifacts").exists() and "MLflow run" not in out.stdout and not ray.is_initialized()


def test_ctrl_c_waits_for_the_end_of_an_uninterrupted_block():
    """Ctrl-C while MLflow creates its store would leave it half-migrated (every later run then
    failed, "table skills already exists"): the interrupt comes after the block, not inside."""
    import signal
    import time

    from suite.errors import uninterrupted

    finished = False
    with pytest.raises(KeyboardInterrupt):
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # Python would have run the handler by now, were the signal not held
            finished = True
    assert finished


def test_main_gives_the_process_its_own_signal_handlers_back(tmp_path, monkeypatch, capsys):
    """A test, a job or a notebook that calls ``main`` keeps its Ctrl-C and SIGTERM: a handler
    left behind (one that leaves the process at once) ended a pytest worker mid-run."""
    import signal
    import threading

    from suite.cli import main

    monkeypatch.chdir(tmp_path)
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), threading.excepthook)
    assert main(["models"]) == 0 and "lenet" in capsys.readouterr().out
    assert main(["data", "check", "nosuchset"]) == 2  # the error path too
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), threading.excepthook) == before
