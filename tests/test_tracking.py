"""The MLflow tracker against a real local store (sqlite in a temp folder)."""

import numpy as np
import pytest
import torch

from suite.config import DataConfig, RuntimeConfig
from suite.pipeline.tracking import Tracker


def test_metric_names_mlflow_rejects_are_cleaned(tmp_path):
    tracker = Tracker(RuntimeConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="t"))
    run = tracker.start_parent("compare", {})
    # row labels such as "VGG16-pruned (0.4)" become metric keys; MLflow refuses brackets
    tracker.log_metrics(run, {"VGG16-pruned (0.4)": {"test_acc": 0.5}, "CAE-Net.p50_ms": 1.5, "note": "skipped"})
    tracker.end(run)
    assert tracker.client.get_run(run).data.metrics == {"VGG16-pruned _0.4_.test_acc": 0.5, "CAE-Net.p50_ms": 1.5}


def test_a_stage_curve_has_no_false_point_at_step_0(tmp_path):
    """A training stage logs one point per epoch (steps 1..n); its final numbers land on the last
    epoch's step, not on a step 0 before the curve, in the run and in a cache hit's run, and
    those the last epoch already logged are not logged twice."""
    from suite.pipeline.stage import StageRunner

    tracker = Tracker(RuntimeConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="t"))
    tracker.start_parent("pipeline", {})
    runner = StageRunner(tmp_path / "cache", tracker, log=lambda _: None)

    def body(work, run_id):
        for epoch, loss in ((1, 2.0), (2, 1.0), (3, 0.5)):
            tracker.log_metrics(run_id, {"train_loss": loss, "epoch": epoch}, step=epoch)
        return {"train_loss": 0.5, "epoch": 3, "val_acc": 0.9}

    for cached in (False, True):
        result = runner.run("baseline", 1, {}, [], body)
        assert result.cached == cached
        history = [(m.step, m.value) for m in tracker.client.get_metric_history(result.run_id, "train_loss")]
        assert history == ([(1, 2.0), (2, 1.0), (3, 0.5)] if not cached else [(3, 0.5)]), history
        assert [m.step for m in tracker.client.get_metric_history(result.run_id, "val_acc")] == [3]


STORES = {"sqlite": lambda tmp: f"sqlite:///{tmp / 'store' / 'mlflow.db'}", "file": lambda tmp: (tmp / "store").as_uri()}


@pytest.mark.parametrize("store", sorted(STORES))
def test_models_registry_and_experiment_on_each_store(tmp_path, monkeypatch, data_root, store):
    """A trained model logged as an MLflow model loads with ``mlflow.pytorch.load_model`` and
    ``mlflow.pyfunc.load_model`` and predicts what the model does; registering it twice for one
    stage makes one version; the experiment opens on ML runs and keeps its artifacts in the store,
    not in the working directory (issue 15, items 2, 6, 7)."""
    import mlflow.pyfunc
    import mlflow.pytorch

    from suite.data import load_split
    from suite.models import create_model

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (tmp_path / "store").mkdir()
    if store == "file":  # MLflow 3 refuses its file store unless asked (see the next test)
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracker = Tracker(RuntimeConfig(tracking_uri=STORES[store](tmp_path), experiment="models"))
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert str(tmp_path / "store") in exp.artifact_location and "elsewhere" not in exp.artifact_location

    torch.manual_seed(0)
    model = create_model("lenet", in_channels=1, image_size=28, num_classes=10).eval()
    test = load_split(DataConfig(dataset="mnist", root=str(data_root), test_limit=32), "test")
    x = test.floats()
    run = tracker.start_parent("stage", {})
    uri = tracker.log_model(run, model, x[:1].numpy())
    with torch.no_grad():
        want = model(x).argmax(1)
    mlflow.set_tracking_uri(tracker.uri)
    try:
        loaded = mlflow.pytorch.load_model(uri)
        with torch.no_grad():
            assert torch.equal(loaded(x).argmax(1), want)
        assert np.array_equal(np.asarray(mlflow.pyfunc.load_model(uri).predict(x.numpy())).argmax(1), want.numpy())
        info = mlflow.models.get_model_info(uri)
        assert info.signature is not None and info.saved_input_example_info is not None
        first = tracker.register("lenet-test", uri, run, {"test_acc": 0.5}, key="abc")
        again = tracker.register("lenet-test", uri, run, {"test_acc": 0.5}, key="abc")
        other = tracker.register("lenet-test", uri, run, {"test_acc": 0.6}, key="def")
        assert first == (1, True) and again == (1, False) and other == (2, True)
        version = tracker.client.get_model_version("lenet-test", "1")
        assert version.tags["test_acc"] == "0.5" and version.run_id == run
        with torch.no_grad():
            assert torch.equal(mlflow.pytorch.load_model("models:/lenet-test/1")(x).argmax(1), want)
    finally:
        mlflow.set_tracking_uri(None)


def test_a_file_store_without_the_opt_in_is_one_line(tmp_path, monkeypatch):
    from suite.errors import ConfigError

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_ALLOW_FILE_STORE=true"):
        Tracker(RuntimeConfig(tracking_uri=(tmp_path / "store").as_uri(), experiment="t"))


def test_params_are_the_changed_keys_and_the_config_goes_beside(tmp_path):
    """Params: only keys that differ from the defaults, methods flattened by name (item 5)."""
    from suite.config import from_dict
    from suite.pipeline.run_info import changed_params

    cfg = from_dict({"name": "x", "data": {"dataset": "mnist"}, "baseline": {"train": {"epochs": 3}},
                     "compare": {"methods": [{"kind": "weight_prune", "name": "WP", "of": "baseline", "ratio": 0.5}]}})
    params = changed_params(cfg)
    assert params["baseline.train.epochs"] == "3" and params["compare.methods.WP.ratio"] == "0.5"
    assert "runtime.experiment" not in params and "baseline.train.lr" not in params
    assert not any(len(v) > 500 for v in params.values())


def test_source_tags_name_the_commit_and_the_command(monkeypatch):
    import subprocess
    import sys

    from suite.pipeline.run_info import REPO_ROOT, source_tags

    monkeypatch.setattr(sys, "argv", ["/x/caenet", "run", "configs/mnist_lenet.yaml", "--set", "a=b c"])
    tags = source_tags()
    assert tags["mlflow.source.name"] == "caenet run configs/mnist_lenet.yaml --set 'a=b c'"
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["mlflow.source.git.commit"] == head.stdout.strip() and tags["git_dirty"] in ("true", "false")
    else:
        assert tags["mlflow.source.git.commit"] == "unknown"
    assert tags["caenet.version"]


def test_a_pipeline_run_records_models_data_source_and_config(smoke_run, monkeypatch):
    """The session's smoke ``caenet run``, read back from its SQLite store as the MLflow UI would:
    the parent holds the changed keys as params, ``config.yaml``, the source tags and both data
    splits; every training stage holds an MLflow model; the registered CAE-Net predicts the
    classes of the cached ``model.pt`` (issue 15, items 2-5)."""
    import json
    from pathlib import Path

    import mlflow
    import mlflow.pytorch
    import yaml
    from mlflow.tracking import MlflowClient

    from suite.config import from_dict, load_config
    from suite.data import load_split
    from suite.pipeline.run_info import dataset_digest
    from suite.stages.graph import trained_models

    uri = f"sqlite:///{smoke_run['cwd'] / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("caenet")
    summary = json.loads(smoke_run["summary"].read_text())
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.data.tags["kind"] == "run"
    cfg = load_config(smoke_run["args"][0], ["smoke=true", "runtime.cpus_per_worker=1", "runtime.progress_every_s=0.001"]).effective()
    assert parent.data.params["data.dataset"] == "mnist" and "runtime.experiment" not in parent.data.params
    local = client.download_artifacts(parent.info.run_id, "config.yaml", str(smoke_run["cwd"] / "dl"))
    assert from_dict(yaml.safe_load(open(local))) == cfg
    assert parent.data.tags["mlflow.source.name"].startswith("cli.py run ")  # the smoke run is `python -m suite.cli run ...`
    assert parent.data.tags["mlflow.source.git.commit"] and parent.data.tags["caenet.version"]

    test = load_split(cfg.data, "test")
    digests = {d.dataset.name: d.dataset.digest for d in parent.inputs.dataset_inputs}
    assert digests["mnist-test"] == dataset_digest(test.images, test.labels) and "mnist-train" in digests
    stages = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    for name in ("baseline", "autoencoder", "caenet"):
        # the run that trained the stage holds its model (the baseline was trained by the stopped run)
        trained_by = json.loads((Path(stages[name].data.tags["stage_dir"]) / "mlflow_model.json").read_text())["run_id"]
        assert "model/MLmodel" in {a.path for a in client.list_artifacts(trained_by, "model")}, name
        assert {d.dataset.name for d in stages[name].inputs.dataset_inputs} == {"mnist-train", "mnist-test"}

    model_name, version = parent.data.tags["registered_model"].split("/")
    assert model_name == "mnist_lenet-caenet"
    mv = client.get_model_version(model_name, version)
    assert float(mv.tags["test_acc"]) == summary["caenet"]["test_acc"] and float(mv.tags["speedup_p50"]) > 0
    monkeypatch.chdir(smoke_run["cwd"])  # the run's relative cache_dir
    cached = trained_models(cfg)["caenet"].load().cpu()
    mlflow.set_tracking_uri(uri)
    try:
        registered = mlflow.pytorch.load_model(f"models:/{model_name}/{version}")
    finally:
        mlflow.set_tracking_uri(None)
    x = test.floats()
    with torch.no_grad():
        assert torch.equal(registered(x).argmax(1), cached(x).argmax(1))
