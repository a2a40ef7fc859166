"""`caenet runs` on a real SQLite MLflow store: only the parent pipeline runs (kind=run), newest
first, with their numbers, `-` for what a failed run never logged, and the way to open them."""

from __future__ import annotations

import time

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

T0 = int(time.time() * 1000) - 3_600_000


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    exp = client.create_experiment("caenet")
    other = client.create_experiment("elsewhere")

    def run(name, minutes, tags, metrics=None, status="FINISHED", experiment=exp):
        r = client.create_run(experiment, start_time=T0 + minutes * 60_000, run_name=name, tags=tags)
        if metrics:
            client.log_batch(r.info.run_id, metrics=[Metric(k, v, T0, 0) for k, v in metrics.items()])
        client.set_terminated(r.info.run_id, status, end_time=T0 + minutes * 60_000 + 1000)
        return r.info.run_id

    pipeline = {"kind": "run", "dataset": "mnist", "smoke": "False"}
    ids = {
        "done": run("mnist_lenet", 0, pipeline, {"caenet.test_acc": 0.9712, "baseline.test_acc": 0.98204, "speedup_p50": 3.456}),
        "failed": run("cifar10_alexnet", 10, {**pipeline, "dataset": "cifar10", "smoke": "True"}, status="FAILED"),
        "killed": run("mnist_lenet", 20, pipeline, {"baseline.test_acc": 0.5}, status="KILLED"),
        "compare": run("compare-mnist_lenet", 30, {"kind": "compare", "dataset": "mnist"}, {"caenet.test_acc": 0.1}),
        "untagged": run("by-hand", 40, {}),
        "elsewhere": run("mnist_lenet", 50, pipeline, experiment=other),
    }
    ids["child"] = run("baseline", 60, {**pipeline, "mlflow.parentRunId": ids["done"]}, {"caenet.test_acc": 0.2})
    return {"uri": uri, "db": db, "ids": ids, "experiment": exp}


def _rows(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    assert lines[0].split()[:5] == ["started", "name", "status", "dataset", "smoke"]
    return [line.split() for line in lines[1:lines.index("")]]


def test_lists_pipeline_runs_newest_first(cli, store):
    out = cli(["runs", "--tracking-uri", store["uri"]])
    assert out.returncode == 0, out.stderr
    rows, ids = _rows(out.stdout), store["ids"]
    assert [r[-1] for r in rows] == [ids["killed"], ids["failed"], ids["done"]]
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(T0 / 1000)).split()
    assert rows[2] == [*started, "mnist_lenet", "FINISHED", "mnist", "False", "97.12%", "98.20%", "3.46", "x", ids["done"]]
    assert rows[1][2:] == ["cifar10_alexnet", "FAILED", "cifar10", "True", "-", "-", "-", ids["failed"]]
    assert rows[0][2:] == ["mnist_lenet", "KILLED", "mnist", "False", "-", "50.00%", "-", ids["killed"]]
    page = f"http://127.0.0.1:5000/#/experiments/{store['experiment']}/runs/{ids['killed']}"
    assert out.stdout.rstrip().endswith(f"open them: mlflow ui --backend-store-uri {store['uri']}  then {page} (the newest)")


def test_limit_and_experiment(cli, store):
    out = cli(["runs", "--tracking-uri", store["uri"], "-n", "1"])
    assert out.returncode == 0 and [r[-1] for r in _rows(out.stdout)] == [store["ids"]["killed"]]
    out = cli(["runs", "--tracking-uri", store["uri"], "--experiment", "elsewhere"])
    assert [r[-1] for r in _rows(out.stdout)] == [store["ids"]["elsewhere"]]
    out = cli(["runs", "--tracking-uri", store["uri"], "-n", "0"])
    assert out.returncode == 2 and "must be at least 1" in out.stderr


def test_no_store_or_no_experiment_is_one_line(cli, store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = cli(["runs"])  # in an empty folder: no ./mlruns, and none is created
    db = tmp_path.resolve() / "mlruns" / "mlflow.db"
    assert out.returncode == 0
    assert out.stdout == f"no runs yet in sqlite:///{db} (experiment 'caenet'); run `caenet run CONFIG` first\n"
    assert not (tmp_path / "mlruns").exists()
    missing = tmp_path / "typo.db"
    out = cli(["runs", "--tracking-uri", f"sqlite:///{missing}"])
    assert out.returncode == 0 and f"no runs yet in sqlite:///{missing}" in out.stdout and not missing.exists()
    out = cli(["runs", "--tracking-uri", store["uri"], "--experiment", "nope"])
    assert out.returncode == 0 and out.stdout.startswith(f"no runs yet in {store['uri']} (experiment 'nope')")


def test_help(cli):
    out = cli(["runs", "--help"])
    text = " ".join(out.stdout.split())
    assert out.returncode == 0 and "usage: caenet runs" in text and "Example: caenet runs" in text
