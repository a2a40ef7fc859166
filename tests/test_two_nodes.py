"""A real 2-node Ray cluster on one machine, whose worker node sees none of the driver's files.

The head runs with ``--num-cpus=0``, so every training, clustering task and Tune trial's
workers land on the worker node. That node is started inside ``unshare -m`` with a tmpfs over
the stage cache, the MLflow store, the checkout's ``artifacts/`` and ``mlruns/`` and the
datasets: a worker that opened any path of the driver's would fail. Only ``runtime.storage``
(``$CAENET_STORAGE``, set in the head's environment as ``cluster.yaml`` sets it on every node)
is shared. The jobs are submitted with the ``ray job submit`` CLI, as the README says.

Needs root and ``unshare`` (util-linux); skipped with the reason elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from suite.locks import try_lock
from tests.conftest import REPO, free_port, kill_marked

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")


def _can_unshare() -> str | None:
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    if os.geteuid() != 0:
        return "needs root for unshare -m and tmpfs mounts"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"unshare -m is not permitted here: {probe.stderr.decode().strip()[:200]}"
    return None


_why = _can_unshare()
if _why:
    pytestmark = [pytest.mark.slow, pytest.mark.skip(reason=_why)]


_taken: set[int] = set()


def _port() -> int:
    """A free port not handed out before (a port just freed can come back twice in a row)."""
    while (port := free_port()) in _taken:
        pass
    _taken.add(port)
    return port


def _ports(*flags: str) -> list[str]:
    return [f"--{flag}={_port()}" for flag in flags]


class Cluster:
    """A head (0 CPUs, MLflow and the cache on its disk) and replaceable worker nodes."""

    def __init__(self, data_root: Path):
        self.temp = Path(tempfile.mkdtemp(prefix="c2n", dir="/tmp"))  # short: socket paths <= 107 bytes
        self.storage = self.temp / "storage"  # the only folder both nodes see
        self.cache = self.temp / "cache"
        self.mlflow_dir = self.temp / "mlflow"
        for d in (self.storage, self.cache, self.mlflow_dir):
            d.mkdir()
        self.tracking_uri = f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"
        self.data_root = data_root
        # The head's Ray folder too: a worker node takes the head's temp dir name, and two nodes
        # sharing one session folder delete each other's runtime_env files (a job's working_dir).
        self.hidden = [self.cache, self.mlflow_dir, data_root.resolve(), REPO / "artifacts", REPO / "mlruns", self.temp / "head"]
        self.gcs, self.dash = _port(), _port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "CAENET_TEST_RAY": str(self.temp), "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
                    # what cluster.yaml gives every node: the shared storage and the tracking store
                    "CAENET_STORAGE": str(self.storage), "MLFLOW_TRACKING_URI": self.tracking_uri,
                    "CAENET_DATA": str(data_root), "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.workers: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dash}"

    def start_head(self, cpus: int = 0) -> None:
        cmd = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.gcs}", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={self.dash}", "--include-dashboard=true", f"--num-cpus={cpus}", "--num-gpus=0",
               f"--object-store-memory={300 * 1024 * 1024}", f"--temp-dir={self.temp / 'head'}", "--disable-usage-stats",
               "--min-worker-port=22000", "--max-worker-port=22999",
               *_ports("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                       "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"ray start --head failed: {done.stderr[-2000:]}")

    def start_worker(self, n: int) -> subprocess.Popen:
        """A worker node in its own mount namespace, the driver's folders covered by tmpfs."""
        mounts = " && ".join(f"mkdir -p '{d}' && mount -t tmpfs -o size=64m tmpfs '{d}'" for d in self.hidden)
        # Its own loopback address: a driver on this machine then attaches to the head (127.0.0.1), never to it.
        ray = [RAY, "start", f"--address=127.0.0.1:{self.gcs}", f"--node-ip-address=127.0.0.{2 + n}", "--num-cpus=2", "--num-gpus=0",
               f"--object-store-memory={300 * 1024 * 1024}", "--block", "--disable-usage-stats",
               f"--min-worker-port={23000 + 1000 * n}", f"--max-worker-port={23999 + 1000 * n}",
               *_ports("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                       "runtime-env-agent-port", "node-manager-port", "object-manager-port")]
        log = open(self.temp / f"worker{n}.log", "w")
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", f"{mounts} && exec {' '.join(ray)}"],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        self.wait_for_nodes(2)
        return proc

    def alive_nodes(self) -> int:
        from ray.util.state import list_nodes

        try:
            return sum(1 for n in list_nodes(address=self.address, raise_on_missing_output=False) if n.state == "ALIVE")
        except Exception:
            return 0

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while self.alive_nodes() < count:
            if time.time() > deadline:
                logs = "".join(p.read_text()[-1500:] for p in self.temp.glob("worker*.log"))
                raise RuntimeError(f"{count} nodes did not come up: {logs}")
            time.sleep(1)

    def kill_worker(self, proc: subprocess.Popen) -> int:
        """SIGKILL every process in the worker node's mount namespace (raylet, its workers): a node lost."""
        ns = os.readlink(f"/proc/{proc.pid}/ns/mnt")
        killed = 0
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if os.readlink(f"/proc/{entry.name}/ns/mnt") == ns:
                        os.kill(int(entry.name), signal.SIGKILL)
                        killed += 1
                except OSError:
                    continue
        proc.wait(timeout=30)
        return killed

    def submit(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """``ray job submit`` as a user types it, then wait for the job's end and read its logs
        with ``ray job logs``. Not the blocking form: its log tail is a WebSocket to the
        dashboard that Ray closes now and then mid-job (close code 1006, seen in one CI run in
        about ten), which fails the CLI while the job runs on. The wait polls the job's status
        over the dashboard's HTTP API (a ray CLI per poll would cost ~1.5 s of CPU each)."""
        sent, job = self.submit_no_wait(*args)
        if job is None:
            return sent
        return self.wait(job, timeout, sent)

    def submit_no_wait(self, *args: str) -> tuple[subprocess.CompletedProcess, str | None]:
        """``ray job submit --no-wait``: (the CLI's result, the job's submission id or None)."""
        cmd = [RAY, "job", "submit", "--no-wait", "--address", self.address, "--working-dir", str(REPO), "--", "python", *args]
        sent = subprocess.run(cmd, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=120)
        found = re.search(r"raysubmit_\w+", sent.stdout + sent.stderr)
        return sent, (found.group(0) if sent.returncode == 0 and found else None)

    def wait(self, job: str, timeout: float = 900, sent: subprocess.CompletedProcess | None = None) -> subprocess.CompletedProcess:
        """The job's end (status polled over HTTP), with its logs from ``ray job logs``."""
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(self.address)
        deadline = time.time() + timeout
        while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            if time.time() > deadline:
                raise TimeoutError(f"job {job} still {status} after {timeout:g}s")
            time.sleep(0.5)
        logs = subprocess.run([RAY, "job", "logs", "--address", self.address, job], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        before = (sent.stdout, sent.stderr) if sent else ("", "")
        return subprocess.CompletedProcess(["ray", "job", job], 0 if status == JobStatus.SUCCEEDED else 1,
                                           before[0] + logs.stdout, before[1] + logs.stderr + f"\njob status: {status}")

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                self.kill_worker(proc)
        kill_marked(str(self.temp))  # every process of the cluster, whatever its title
        subprocess.run(["pkill", "-9", "-f", str(self.temp)], capture_output=True)
        subprocess.run(["pkill", "-9", "-f", f"127.0.0.1:{self.gcs}"], capture_output=True)
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and f":{self.gcs}" in current.read_text():  # names the head just killed
            current.unlink()
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(data_root):
    c = Cluster(data_root)
    try:
        c.start_head()
        c.start_worker(0)
        yield c
    finally:
        c.stop()


def _flags(cluster: Cluster, *extra: str) -> list[str]:
    return ["--set", f"runtime.cache_dir={cluster.cache}", "--set", "runtime.progress=false", *extra]


@pytest.mark.parametrize("storage", ["hidden", "unset"])
def test_unshared_storage_stops_the_run_before_any_stage(cluster, storage):
    """A storage the worker node cannot see, or none set at all (checkpoints would go to the
    driver's cache, issue 26): one line naming runtime.storage, in seconds."""
    env = {**cluster.env, "RAY_ADDRESS": f"127.0.0.1:{cluster.gcs}"}
    if storage == "hidden":
        flags = _flags(cluster, "--set", f"runtime.storage={cluster.cache / 'ckpt'}")  # under a folder the worker node's tmpfs covers
    else:
        flags = _flags(cluster)
        env.pop("CAENET_STORAGE")
    t0 = time.time()
    done = subprocess.run([str(VENV_BIN / "caenet"), "run", "configs/mnist_lenet.yaml", "--smoke", *flags],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    took = time.time() - t0
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    line = [l for l in out.splitlines() if "runtime.storage" in l]
    assert line and "not visible from node" in line[-1] and "s3://" in line[-1], out[-2000:]
    assert storage == "hidden" or "runtime.storage is unset" in line[-1]
    assert not list(cluster.cache.glob("mnist/baseline-*")), "a stage started"
    assert took < 120, f"took {took:.0f}s to refuse"


def _wait_for(pattern: str, root: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not list(root.glob(pattern)):
        if time.time() > deadline:
            raise TimeoutError(f"no {pattern} under {root} after {timeout:g}s")
        time.sleep(0.1)


def _entrypoints(marker: str) -> list[int]:
    """Pids of job entrypoints (``python jobs/pipeline.py ...``) whose command line holds ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if any(c.endswith(b"jobs/pipeline.py") for c in cmd) and marker.encode() in b" ".join(cmd):
            found.append(int(entry.name))
    return found


def test_a_stopped_or_killed_job_resubmitted_resumes(cluster):
    """The job lifecycle through the ``ray job`` CLI (issue 26): ``ray job stop`` during the CAE's
    training ends the job's MLflow runs KILLED, keeps every finished stage, and the same job
    submitted again finds them cached and resumes the CAE from its last checkpoint in
    ``runtime.storage``; then the job's entrypoint is SIGKILLed during CAE-Net's training (no
    chance to end its runs), and the next submission ends what it left RUNNING and resumes CAE-Net
    from its checkpoint; its worker node is then lost and replaced, and the training resumes
    there from its newest checkpoint in the shared storage. The run finishes; no run is left
    RUNNING, no .partial folder or held lock."""
    import threading

    from mlflow.tracking import MlflowClient

    cache = cluster.temp / "lifecycle"
    args = ["jobs/pipeline.py", "configs/mnist_lenet.yaml", "--set", f"runtime.cache_dir={cache}", "--set", "runtime.progress=false",
            "--set", "data.train_limit=2000", "--set", "data.test_limit=300", "--set", "baseline.train.epochs=1",
            "--set", "autoencoder.train.epochs=6", "--set", "autoencoder.train.batch_size=8",
            "--set", "caenet.train.epochs=10", "--set", "caenet.train.batch_size=8",
            "--set", "clustering.k_max=3", "--set", "caenet.ablations=[]", "--set", "autoencoder.compare_unclustered=false",
            "--set", "evaluate.latency.window_queries=4", "--set", "runtime.experiment=lifecycle"]
    client = MlflowClient(cluster.tracking_uri)

    def runs(status: str | None = None):
        exp = client.get_experiment_by_name("lifecycle")
        found = client.search_runs([exp.experiment_id], max_results=500) if exp else []
        return [r for r in found if status is None or r.info.status == status]

    # 1. ray job stop while the CAE trains
    sent, job = cluster.submit_no_wait(*args)
    assert job, sent.stdout + sent.stderr
    _wait_for("checkpoints/mnist/autoencoder-*/attempt-*/checkpoint_*/meta.json", cluster.storage)
    stop = subprocess.run([RAY, "job", "stop", "--address", cluster.address, job], env=cluster.env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    done = cluster.wait(job)
    assert "job status: STOPPED" in done.stderr, done.stdout[-2000:] + done.stderr[-2000:]
    time.sleep(1)
    assert not runs("RUNNING"), [(r.info.run_name, r.info.status) for r in runs()]
    (parent,) = [r for r in runs() if "mlflow.parentRunId" not in r.data.tags]
    stages = {r.info.run_name: r.info.status for r in runs() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert parent.info.status == "KILLED" and stages["autoencoder"] == "KILLED" and stages["baseline"] == "FINISHED", (
        stages, done.stdout[-3000:], done.stderr[-2000:])
    finished = {p.name.rsplit("-", 1)[0] for p in (cache / "mnist").glob("*-*") if (p / "_SUCCESS").exists()}
    assert {"baseline", "entropy", "features", "clustering", "targets"} <= finished, finished

    # 2. the same job again: finished stages cached, the CAE from its checkpoint; SIGKILL during CAE-Net
    sent, job = cluster.submit_no_wait(*args)
    assert job, sent.stdout + sent.stderr
    _wait_for("checkpoints/mnist/caenet-*/attempt-*/checkpoint_*/meta.json", cluster.storage)
    pids = _entrypoints(str(cache))
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    done = cluster.wait(job)
    assert "job status: FAILED" in done.stderr, done.stderr[-2000:]
    assert "[baseline] cached" in done.stdout and "[clustering] cached" in done.stdout, done.stdout[-3000:]
    cae = json.loads(next((cache / "mnist").glob("autoencoder-*/metrics.json")).read_text())
    assert cae["epoch"] == 6 and cae["started_at_epoch"] >= 1, cae  # resumed, not restarted
    assert runs("RUNNING")  # nobody could end them: the driver was SIGKILLed

    # 3. and again: the dead driver's runs end KILLED and CAE-Net resumes; then its worker node
    # is lost (killed, and a fresh one started, as the autoscaler would): the training resumes
    # on the new node from its newest checkpoint, and the run finishes, logged on the head
    resumed_from = max(int(json.loads(m.read_text())["epoch"]) for m in
                       cluster.storage.glob("checkpoints/mnist/caenet-*/attempt-0/checkpoint_*/meta.json"))
    replaced: list[str] = []

    def lose_the_worker_node():
        _wait_for("checkpoints/mnist/caenet-*/attempt-1/checkpoint_*/meta.json", cluster.storage, 600)
        cluster.kill_worker(cluster.workers[-1])
        replaced.append("killed")
        cluster.start_worker(len(cluster.workers))
        replaced.append("started")

    killer = threading.Thread(target=lose_the_worker_node, daemon=True)
    killer.start()
    done = cluster.submit(*args)
    killer.join(timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert replaced == ["killed", "started"], done.stdout[-3000:]
    assert "[mlflow] ended" in done.stdout and "that a driver which died left RUNNING" in done.stdout
    assert "[caenet] worker lost" in done.stdout, done.stdout[-3000:]
    caenet = json.loads(next((cache / "mnist").glob("caenet-*/metrics.json")).read_text())
    assert caenet["epoch"] == 10 and caenet["started_at_epoch"] > resumed_from, (caenet, resumed_from)  # the newer checkpoint
    assert not runs("RUNNING")
    (last,) = [r for r in runs("FINISHED") if "mlflow.parentRunId" not in r.data.tags]
    stage = next(r for r in runs() if r.data.tags.get("mlflow.parentRunId") == last.info.run_id and r.info.run_name == "caenet")
    steps = {m.step for m in client.get_metric_history(stage.info.run_id, "val_acc")}
    assert set(range(resumed_from + 1, 11)) <= steps  # every epoch this run trained, from the driver's relay
    assert not list((cache / "mnist").glob("*.partial"))
    for lock in (cache / "mnist").glob("*.lock"):  # lock files stay (flock): none is held
        with try_lock(lock, create=False) as free:
            assert free, lock
    assert not list(cluster.storage.glob("checkpoints/mnist/*/attempt-*/checkpoint_*"))


def test_smoke_sweep_job_on_two_nodes(cluster):
    """A Tune sweep through ``ray job submit``: trials run their stages beside the driver (its
    cache and MLflow), their trainings on the worker node that sees neither. ASHA stops the
    trial at its last epoch (max_t) and the driver must still get its result; the trial is an
    MLflow run under the sweep's, its stages under it, and the SLO pick goes to the Model
    Registry tagged with what it was picked on. (The one sweep end to end of the tests: the
    ranking and the SLO choice over several rows are unit-tested in test_sweep.)"""
    from mlflow.tracking import MlflowClient

    sweep = cluster.temp / "sweep.yaml"
    sweep.write_text(f"""name: two-node-sweep
experiment: {REPO / 'configs' / 'mnist_lenet.yaml'}
set:
  - caenet.ablations=[]
  - autoencoder.compare_unclustered=false
  - runtime.cpus_per_worker=1
  - runtime.cache_dir={cluster.cache}
  - runtime.experiment=two-nodes-sweep
space:   # one trial: what is tested is where it runs and what it records, not how many
  clustering.k: [2]
  autoencoder.prune.weight_ratio: [0.8]
scheduler: {{type: asha, grace_period: 1}}
max_concurrent_trials: 1
trial_cpus: 1
slo: {{speedup: 0.5}}
""")
    done = cluster.submit("jobs/sweep.py", str(sweep), "--smoke")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "chosen: run_trial_" in out
    summary = json.loads(next(cluster.cache.glob("mnist/sweeps/*two-node-sweep/sweep_summary.json")).read_text())
    assert len(summary["trials"]) == 1 and summary["chosen"] is not None and not summary["failed"], summary
    assert summary["trials"][0]["params"]["clustering.k"] == 2
    assert all(t["nonzero_parameters"] < 0.6 * 95682 for t in summary["trials"])  # the CAE's 80% pruned encoder

    client = MlflowClient(cluster.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("two-nodes-sweep").experiment_id])
    sweep_run = next(r for r in runs if r.info.run_id == summary["mlflow_run_id"])
    assert sweep_run.data.tags["kind"] == "sweep" and sweep_run.info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 1 and all(t.info.status == "FINISHED" for t in trials)
    for t in trials:  # side by side in the UI: the swept keys as params, accuracy and latency as metrics
        assert t.data.tags["mlflow.parentRunId"] == sweep_run.info.run_id
        assert t.data.params["clustering.k"] == "2" and "latency_p50_ms" in t.data.metrics
        stages = {r.data.tags["mlflow.runName"] for r in runs if r.data.tags.get("mlflow.parentRunId") == t.info.run_id}
        assert {"clustering", "targets", "autoencoder", "caenet"} <= stages
    assert "pareto.png" in {a.path for a in client.list_artifacts(sweep_run.info.run_id)}
    name, version = sweep_run.data.tags["registered_model"].split("/")
    assert name == "two-node-sweep-slo-caenet"
    picked = client.get_model_version(name, version)
    assert picked.tags["trial"] == summary["chosen"]["trial"] and picked.tags["param.clustering.k"] == "2"


def test_a_ray_head_that_stopped_is_one_line(cluster):
    """Last in this module: the cluster's head (and its worker node) killed, as a head that went
    down; a run pointed at it stops before any stage with one line naming RAY_ADDRESS, in
    seconds, not Ray's minutes of reconnecting (issue 29)."""
    kill_marked(str(cluster.temp))
    for proc in cluster.workers:
        proc.wait(timeout=30)
    env = {**cluster.env, "RAY_ADDRESS": f"127.0.0.1:{cluster.gcs}"}
    t0 = time.time()
    done = subprocess.run([str(VENV_BIN / "caenet"), "run", "configs/mnist_lenet.yaml", "--smoke", *_flags(cluster)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    lines = [l for l in done.stderr.splitlines() if l.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stdout[-2000:] + done.stderr[-2000:]
    assert lines[0].startswith("caenet: error: RAY_ADDRESS 127.0.0.1:") and "no Ray head answers there" in lines[0], lines
    assert took < 30, took
