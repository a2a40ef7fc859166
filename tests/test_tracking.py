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
