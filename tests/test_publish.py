"""`--publish DIR` of `caenet compare`, `caenet study` and `caenet sweep` (issue 34: the tables of docs/ are
generated from docs/results/*.json): the run's data and plot land in DIR under the file's name, a
smoke run's under <name>-smoke so that it never replaces the real one. The runs are stubbed: what
is tested is the wiring (the real runs wrote docs/results/ through it)."""

import importlib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command, runner, path, files", [
    ("study", "run_study", "configs/studies/mnist.yaml", {"study.json": "study_{}.json", "study.png": "study_{}.png"}),
    ("sweep", "run_sweep", "configs/sweeps/mnist_smoke.yaml", {"sweep_summary.json": "sweep_{}.json", "pareto.png": "sweep_{}.png"}),
    ("compare", "run_compare", "configs/mnist_lenet.yaml", {"report.json": "compare_{}.json", "front.png": "compare_{}_front.png"}),
])
def test_publish_copies_the_runs_data_under_the_files_name(tmp_path, monkeypatch, command, runner, path, files):
    from suite.cli import main

    module = importlib.import_module(f"suite.commands.{command}")
    out = tmp_path / "out"
    out.mkdir()
    for source in files:
        (out / source).write_text(f"from the run: {source}")
    summary = {"table": "| t |", "markdown": "| t |", "output": str(out), "mlflow_run_id": "r", "failed_cells": 0,
               "stopped_early": [], "failed": {}, "failed_boards": {}}
    name = yaml.safe_load((REPO / path).read_text())["name"]
    for extra, published in (([], name), (["--smoke"], f"{name}-smoke")):
        # compare says from its report whether the run was smoke; study and sweep from the flag
        monkeypatch.setattr(module, runner, lambda *args, smoke=bool(extra), **kwargs: {**summary, "config": name, "smoke": smoke})
        assert main([command, str(REPO / path), "--publish", str(tmp_path / "pub"), *extra]) == 0
        for source, target in files.items():
            assert (tmp_path / "pub" / target.format(published)).read_text() == f"from the run: {source}"
