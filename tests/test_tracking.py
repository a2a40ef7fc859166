"""The MLflow tracker against a real local store (sqlite in a temp folder)."""

from suite.config import RuntimeConfig
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
    epoch's step, not on a step 0 before the curve, in the run and in a cache hit's run."""
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
        assert history == ([(1, 2.0), (2, 1.0), (3, 0.5), (3, 0.5)] if not cached else [(3, 0.5)]), history
        assert [m.step for m in tracker.client.get_metric_history(result.run_id, "val_acc")] == [3]
