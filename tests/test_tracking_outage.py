"""A tracking store that stops answering mid-run (issue 29) fails no stage and no training: the
stage runner's calls warn once and go on, and the epochs a training could not log are kept and
sent once the store answers again. The outage is real: the SQLite store's file is moved away."""

from pathlib import Path

from suite.config import RuntimeConfig
from suite.distributed import relay
from suite.pipeline.tracking import Tolerant, Tracker


def _outage(db: Path):
    """Move the store away (the path becomes a folder SQLite cannot open); returns the undo."""
    away = db.with_name("away.db")
    db.rename(away)
    db.mkdir()
    return lambda: (db.rmdir(), away.rename(db))


def test_a_stage_record_goes_on_through_an_outage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(RuntimeConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    parent = tracker.start_parent("run", {}, {})
    lines: list[str] = []
    tolerant = Tolerant(tracker, lines.append)
    child = tolerant.start_child("stage", {"a": 1}, {})
    back = _outage(tmp_path / "mlflow.db")
    assert tolerant.log_metrics(child, {"x": 1.0}) is None and tolerant.end(child) is None  # no exception
    assert len(lines) == 1 and "did not answer" in lines[0] and "incomplete" in lines[0]
    back()
    tolerant.log_metrics(child, {"x": 2.0})
    assert lines[-1].endswith("answers again") and tracker.client.get_run(child).data.metrics["x"] == 2.0
    tracker.end(parent)


def test_epochs_missed_while_down_are_logged_when_the_store_is_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(RuntimeConfig(tracking_uri=uri))
    run = tracker.start_parent("training", {}, {})
    monkeypatch.setattr(relay, "RETRY_DOWN_S", 0.0)  # try at every epoch (30 s between tries by default)
    logger = relay.EpochLogger(uri, run)
    logger({"epoch": 1, "train_loss": 1.0})
    back = _outage(tmp_path / "mlflow.db")
    logger({"epoch": 2, "train_loss": 0.5})  # the store is gone: kept, the training goes on
    logger({"epoch": 3, "train_loss": 0.25})
    assert not logger.flush()
    back()
    assert logger.flush()
    steps = {m.step: m.value for m in tracker.client.get_metric_history(run, "train_loss")}
    assert steps == {1: 1.0, 2: 0.5, 3: 0.25}


def test_a_run_whose_store_is_gone_at_its_end_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(RuntimeConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    run = tracker.start_parent("run", {}, {})
    with tracker.closing(run):
        back = _outage(tmp_path / "mlflow.db")  # gone while the command works
    assert "could not record the end (FINISHED) of run" in capsys.readouterr().err
    back()
    assert tracker.client.get_run(run).info.status == "RUNNING"  # what the store last heard; the line said why
