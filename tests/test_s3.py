"""Issue 44: the suite against a real S3 endpoint (moto's server on 127.0.0.1, ``s3_server``),
given the way a user gives a non-AWS one: credentials and ``AWS_ENDPOINT_URL`` in the
environment. Checkpoints as a one-worker training persists and resumes them, the storage
helpers, and an MLflow server started as ``cluster.yaml`` starts it (``--artifacts-destination
s3://...``) holding a run's artifacts in the bucket. No Ray: these run beside the Ray lane."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from suite import storage
from suite.config import RuntimeConfig
from suite.pipeline.tracking import Tracker
from suite.training import checkpoints
from tests.conftest import free_port


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_checkpoints_persist_resume_and_clean_up_in_s3(s3_server):
    s3, bucket = s3_server["s3"], s3_server["bucket"]
    root = f"s3://{bucket}/ckpt/mnist/baseline-0123.partial"
    attempt = storage.join(root, "attempt-0")
    assert attempt.startswith("s3://")  # the checkpoint path stays an S3 one
    for epoch in range(3):  # what a one-worker training writes after every epoch, the two newest kept
        checkpoints.persist(lambda folder, e=epoch: checkpoints.write(folder, {"w": torch.full((2,), float(e))}, {}, {}, e,
                                                                      {"epoch": e + 1}), attempt, epoch, keep=2)
    keys = _keys(s3, bucket, "ckpt/")
    assert {k.split("/")[4] for k in keys if k.count("/") >= 5} == {"checkpoint_epoch-0001", "checkpoint_epoch-0002"}, keys
    folder, epoch = checkpoints.latest(root)  # a restarted training finds the newest in the bucket
    assert epoch == 2 and folder.startswith("s3://") and folder.endswith("checkpoint_epoch-0002")
    state, meta = checkpoints.read(folder)
    assert torch.equal(state["model"]["w"], torch.full((2,), 2.0)) and meta["metrics"]["epoch"] == 3
    storage.write_bytes(storage.join(root, "done.json"), b"{}")
    assert storage.exists(storage.join(root, "done.json")) and storage.files_under(root)
    storage.delete(root)  # the stage's clean-up at the end: nothing left in the bucket
    assert _keys(s3, bucket, "ckpt/mnist/baseline-0123.partial") == [] and checkpoints.latest(root) == (None, -1)


def test_a_bucket_that_is_not_there_is_one_line(s3_server):
    with pytest.raises(Exception) as err:
        storage.write_bytes(f"s3://no-such-bucket-{os.getpid()}/x", b"x")
    assert "\n" not in str(err.value).strip()


@pytest.fixture
def mlflow_server_on_s3(s3_server, tmp_path):
    """``mlflow server`` as cluster.yaml's head starts it: a SQLite backend, artifacts proxied to
    ``s3://<bucket>/mlflow-artifacts`` (the server needs boto3: the ``s3`` extra)."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                               "--artifacts-destination", f"s3://{s3_server['bucket']}/mlflow-artifacts", "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **s3_server["env"]})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"mlflow server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


def test_mlflow_artifacts_land_in_the_bucket(s3_server, mlflow_server_on_s3, tmp_path):
    """A run's artifacts go through the tracking server to S3, and read back through it."""
    tracker = Tracker(RuntimeConfig(tracking_uri=mlflow_server_on_s3, experiment="s3-test"))
    run = tracker.start_parent("run", {"a": 1}, {})
    (tmp_path / "table.md").write_text("| a |\n")
    tracker.log_artifact(run, tmp_path / "table.md")
    tracker.end(run)
    keys = _keys(s3_server["s3"], s3_server["bucket"], "mlflow-artifacts/")
    assert any(k.endswith(f"{run}/artifacts/table.md") for k in keys), keys
    back = tracker.client.download_artifacts(run, "table.md", str(tmp_path / "back"))
    assert open(back).read() == "| a |\n"
