"""``ray job submit`` against a real local Ray head: the pipeline job runs and logs to MLflow."""

import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pipeline_job_on_local_head(ray_head, tmp_path, data_root):
    from mlflow.tracking import MlflowClient
    from ray.job_submission import JobStatus, JobSubmissionClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = JobSubmissionClient(ray_head["address"])
    entry = [Path(sys.executable).as_posix(), "jobs/pipeline.py", "configs/mnist_lenet.yaml", "--smoke",
             "--set", f"runtime.cache_dir={tmp_path / 'artifacts'}", "--set", f"runtime.tracking_uri={uri}",
             "--set", "runtime.experiment=jobs-test", "--set", "runtime.progress=false",
             "--set", "runtime.cpus_per_worker=1", "--set", "autoencoder.compare_unclustered=false",
             "--set", "caenet.ablations=[]"]
    job_id = client.submit_job(
        entrypoint=" ".join(entry),
        runtime_env={"working_dir": str(REPO), "excludes": ["artifacts", "mlruns", "*.db"],
                     "env_vars": {"CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled"}},
    )
    deadline = time.time() + 900
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, "job did not finish in 15 minutes"
        time.sleep(3)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "MLflow run" in logs and "caenet" in logs

    mlflow = MlflowClient(uri)
    exp = mlflow.get_experiment_by_name("jobs-test")
    runs = mlflow.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["mlflow.runName"] for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {"baseline", "autoencoder", "caenet", "evaluate"} <= children
    assert 0.0 <= parents[0].data.metrics["caenet.test_acc"] <= 1.0  # evaluated (1 epoch: no accuracy claim)
    # The stages ran inside the job's working_dir copy but wrote to the absolute cache folder.
    assert any((tmp_path / "artifacts" / "mnist").glob("caenet-*/_SUCCESS"))
