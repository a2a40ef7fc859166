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
    from suite.experiment import from_tree as from_dict
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
    splits; every training stage's run logged its model as an MLflow LoggedModel, with the stage's
    metrics (issue 27); the registered CAE-Net predicts the classes of the cached ``model.pt``
    (issue 15, items 2-5)."""
    import json
    from pathlib import Path

    import mlflow
    import mlflow.pytorch
    import yaml
    from mlflow.tracking import MlflowClient

    from suite.data import load_split
    from suite.experiment import from_tree as from_dict
    from suite.experiment import load as load_config
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
    logged = {m.model_id: m for m in client.search_logged_models(experiment_ids=[exp.experiment_id])}
    for name in ("baseline", "autoencoder", "caenet"):
        # the run that trained the stage logged its model (the baseline was trained by the stopped run)
        info = json.loads((Path(stages[name].data.tags["stage_dir"]) / "mlflow_model.json").read_text())
        model = logged[info["model_uri"].removeprefix("models:/")]
        assert (model.name, model.source_run_id, str(model.status)) == (name, info["run_id"], "READY")
        assert model.metrics and {m.run_id for m in model.metrics} == {info["run_id"]}, name
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


def _tiny_tracker(tmp_path, monkeypatch):
    """A tracker on SQLite in ``tmp_path/store`` run from ``tmp_path/cwd``, with no process-wide
    tracking URI (as in ``caenet run``): MLflow calls that fall back on it would use, and create,
    ``cwd/mlflow.db``."""
    import mlflow

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    return Tracker(RuntimeConfig(tracking_uri=f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", experiment="t"))


def _tiny_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def test_a_stage_model_is_a_logged_model_linked_to_its_run_and_metrics(tmp_path, monkeypatch):
    """Issue 27: a stage's model is an MLflow LoggedModel (the experiment's Models tab), named
    after the stage, from its run, with the run's last-epoch and final metrics; the returned
    ``models:/`` URI loads the TorchScript model with ``mlflow.pytorch`` and ``mlflow.pyfunc``."""
    import mlflow
    import mlflow.pyfunc
    import mlflow.pytorch

    tracker = _tiny_tracker(tmp_path, monkeypatch)
    tracker.start_parent("pipeline", {})
    run = tracker.start_child("baseline", {"train": {"epochs": 3}})
    other = tracker.start_child("autoencoder", {})
    for epoch, loss in ((1, 2.0), (2, 1.0), (3, 0.5)):
        tracker.log_metrics(run, {"train_loss": loss, "epoch": epoch}, step=epoch)
    tracker.log_metrics(other, {"train_loss": 9.0}, step=1)
    net, x = _tiny_net(), np.random.default_rng(0).random((1, 4), dtype=np.float32)

    uri = tracker.log_model(run, net, x)
    tracker.log_final_metrics(run, {"train_loss": 0.5, "epoch": 3, "test_acc": 0.75}, step=3)
    tracker.log_metrics(other, {"train_loss": 8.0}, step=2)  # another run's metric: not the model's

    models = tracker.client.search_logged_models(experiment_ids=[tracker.experiment_id])
    assert len(models) == 1
    model = models[0]
    assert uri == f"models:/{model.model_id}"
    assert (model.name, model.source_run_id, str(model.status)) == ("baseline", run, "READY")
    assert model.params == {"train.epochs": "3"}
    assert sorted((m.key, m.step, m.value) for m in model.metrics) == [("epoch", 3, 3.0), ("test_acc", 3, 0.75),
                                                                      ("train_loss", 3, 0.5)]
    assert [(o.model_id, o.step) for o in tracker.client.get_run(run).outputs.model_outputs] == [(model.model_id, 3)]
    # linking the last epoch to the model adds no second point to the run's curve
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(run, "train_loss")] == [(1, 2.0), (2, 1.0), (3, 0.5)]
    assert not (tmp_path / "cwd" / "mlflow.db").exists()

    mlflow.set_tracking_uri(tracker.uri)
    try:
        loaded = mlflow.pytorch.load_model(uri)
        assert isinstance(loaded, torch.jit.ScriptModule)  # TorchScript: loads without the suite
        with torch.no_grad():
            want = net(torch.from_numpy(x))
            assert torch.allclose(loaded(torch.from_numpy(x)), want)
        assert np.allclose(np.asarray(mlflow.pyfunc.load_model(uri).predict(x)), want.numpy())
        info = mlflow.models.get_model_info(uri)
        assert info.signature is not None and info.saved_input_example_info is not None
        assert info.model_id == model.model_id and info.run_id == run
    finally:
        mlflow.set_tracking_uri(None)


def test_register_takes_the_logged_model_uri(tmp_path, monkeypatch):
    """``register`` makes a version from ``log_model``'s ``models:/<id>`` URI without a
    process-wide tracking URI (MLflow's SQL registry looks the model up through it), leaves that
    URI as it was, reuses the version of a stage key, and lists the versions on the LoggedModel;
    a ``runs:/`` model URI that an older suite wrote still registers."""
    import json
    import os
    import tempfile

    import mlflow
    import mlflow.pytorch

    tracker = _tiny_tracker(tmp_path, monkeypatch)
    run = tracker.start_parent("stage", {})
    net, x = _tiny_net(), np.zeros((1, 4), dtype=np.float32)
    uri = tracker.log_model(run, net, x)
    model_id = uri.split("/")[-1]

    assert tracker.register("tiny", uri, run, {"test_acc": 0.5}, key="abc") == (1, True)
    assert tracker.register("tiny", uri, run, {"test_acc": 0.5}, key="abc") == (1, False)
    assert tracker.register("tiny", uri, run, {"test_acc": 0.6}, key="def") == (2, True)
    version = tracker.client.get_model_version("tiny", "1")
    assert (version.source, version.run_id, version.tags["test_acc"]) == (uri, run, "0.5")
    assert json.loads(tracker.client.get_logged_model(model_id).tags["mlflow.modelVersions"]) == [
        {"name": "tiny", "version": "1"}, {"name": "tiny", "version": "2"}]
    assert not (tmp_path / "cwd" / "mlflow.db").exists() and "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'cwd' / 'mlflow.db'}"  # MLflow's default, untouched

    with tempfile.TemporaryDirectory() as folder:  # a stage logged by an older suite
        mlflow.pytorch.save_model(torch.jit.trace(net, torch.from_numpy(x)), f"{folder}/model", serialization_format="pickle",
                                  pip_requirements=["torch"])
        tracker.client.log_artifacts(run, f"{folder}/model", "model")
    assert tracker.register("tiny", f"runs:/{run}/model", run, {}, key="old") == (3, True)
    mlflow.set_tracking_uri(tracker.uri)
    try:
        with torch.no_grad():
            for v in ("1", "3"):
                assert torch.allclose(mlflow.pytorch.load_model(f"models:/tiny/{v}")(torch.from_numpy(x)), net(torch.from_numpy(x)))
    finally:
        mlflow.set_tracking_uri(None)


def test_models_logged_from_threads_go_to_their_own_runs(tmp_path, monkeypatch):
    """Stages log their models at once from threads, each to its own run (no active run, no
    process-wide tracking URI): each LoggedModel names its stage and comes from its run."""
    from concurrent.futures import ThreadPoolExecutor

    tracker = _tiny_tracker(tmp_path, monkeypatch)
    tracker.start_parent("pipeline", {})
    runs = {name: tracker.start_child(name, {}) for name in ("baseline", "autoencoder", "caenet")}
    x = np.zeros((1, 4), dtype=np.float32)
    with ThreadPoolExecutor(3) as pool:
        uris = dict(zip(runs, pool.map(lambda run: tracker.log_model(run, _tiny_net(), x), runs.values())))
    models = {m.model_id: m for m in tracker.client.search_logged_models(experiment_ids=[tracker.experiment_id])}
    assert {name: (models[uri.split("/")[-1]].name, models[uri.split("/")[-1]].source_run_id) for name, uri in uris.items()} == {
        name: (name, run) for name, run in runs.items()}
    assert {str(m.status) for m in models.values()} == {"READY"}


def test_an_onnx_export_is_a_logged_model(tmp_path, monkeypatch):
    """``log_onnx_model`` makes an ONNX LoggedModel of the export run, named after its path (MLflow
    refuses "/" and "." in a model name), which ``mlflow.pyfunc`` loads and runs; the export run's
    metrics are not its."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import mlflow
    import mlflow.pyfunc
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w, b = rng.random((3, 4), dtype=np.float32), rng.random(3, dtype=np.float32)
    graph = helper.make_graph([helper.make_node("Gemm", ["input", "w", "b"], ["output"], transB=1)], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    file = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(file))

    tracker = _tiny_tracker(tmp_path, monkeypatch)
    run = tracker.start_parent("export", {})
    tracker.log_metrics(run, {"n": 1})
    x = rng.random((2, 4), dtype=np.float32)
    uri = tracker.log_onnx_model(run, file, x[:1], "onnx/caenet.encoder")
    [model] = tracker.client.search_logged_models(experiment_ids=[tracker.experiment_id])
    assert uri == f"models:/{model.model_id}"
    assert (model.name, model.source_run_id, str(model.status)) == ("onnx-caenet-encoder", run, "READY")
    assert not model.metrics and run not in tracker.run_models
    mlflow.set_tracking_uri(tracker.uri)
    try:
        got = mlflow.pyfunc.load_model(uri).predict(x)
    finally:
        mlflow.set_tracking_uri(None)
    got = np.asarray(next(iter(got.values())) if isinstance(got, dict) else got)
    assert np.allclose(got, x @ w.T + b, atol=1e-6)


def test_runs_a_dead_driver_left_running_are_ended_killed(tmp_path):
    """A driver SIGKILLed (``ray job`` entrypoint, a lost head) cannot end its runs; the next
    session on that host ends them KILLED, with every run under them, and leaves a live
    driver's runs alone (issue 26)."""
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from suite.config import RuntimeConfig
    from suite.pipeline import run_info
    from suite.pipeline.session import _end_orphaned_runs
    from suite.pipeline.tracking import Tracker

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert run_info.driver_gone(run_info.driver_id(dead.pid)) and not run_info.driver_gone(run_info.driver_id())
    assert not run_info.driver_gone("another-host:1:1")  # another host's process: unknown, never ended from here
    tracker = Tracker(RuntimeConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    client = MlflowClient(tracker.uri)
    lost = tracker.start_parent("lost", {}, {"driver": run_info.driver_id(dead.pid)})
    stage = tracker.start_child("baseline", {})
    live = tracker.start_parent("live", {}, {"driver": run_info.driver_id()})
    lines = []
    _end_orphaned_runs(tracker, lines.append)
    assert [client.get_run(r).info.status for r in (lost, stage, live)] == ["KILLED", "KILLED", "RUNNING"]
    assert lines == [f"[mlflow] ended 2 run(s) KILLED that a driver which died left RUNNING ({run_info.driver_id(dead.pid)})"]
