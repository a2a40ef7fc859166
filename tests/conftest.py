"""Shared fixtures: the real offline datasets, at tiny scale."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from suite.training import checkpoints

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _data_root() -> Path:
    env = os.environ.get("CAENET_DATA")
    return Path(env.split(":")[0]) if env else SHARED_DATA


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.fail(f"offline datasets not found at {root}; set CAENET_DATA")
    return root


@pytest.fixture
def ray_local():
    """A local Ray for in-process trainings, shared by every test that asks for it: those tests
    run first, one after another (``pytest_collection_modifyitems``), and the Ray is shut down
    before the first test that does not ask for it (``pytest_runtest_setup``), because only one
    Ray may run on the machine and the CLI tests start their own (a second one makes Ray
    Train's placement-group cleaner fail). One start instead of one per module: ~7 s each."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # as suite.distributed.ray_runtime sets it
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        _SHARED_RAY["up"] = True
    yield


_SHARED_RAY = {"up": False}


# The two lanes (CONTRIBUTING, "Running the tests"). A test that starts Ray, a tracking server
# or an sshd is ``slow``: by one of these fixtures, or marked by hand where it starts one itself.
# Every slow test joins one xdist group, so that under ``-n 2`` one worker runs them one after
# another (one Ray per machine) while the other takes the rest.
# A slow test that starts a server but no Ray (by the fixtures of STARTS_A_SERVER alone) joins
# a second group, which the other worker runs beside the Ray lane; it must still start no Ray.
STARTS_RAY = {"ray_local", "ray_head", "smoke_run", "cluster"}
STARTS_A_SERVER = {"sshd", "s3_server"}
STARTS_SOMETHING = STARTS_RAY | STARTS_A_SERVER
SERIAL, SERVERS = "starts-ray", "starts-a-server"


def pytest_itemcollected(item):
    """Marked as each test is collected: xdist reads the groups in its own
    ``pytest_collection_modifyitems``, which runs before this file's."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if STARTS_SOMETHING & fixtures and not item.get_closest_marker("slow"):
        item.add_marker(pytest.mark.slow)
        if not STARTS_RAY & fixtures:
            item.add_marker(pytest.mark.xdist_group(SERVERS))
            return
    if item.get_closest_marker("slow"):
        item.add_marker(pytest.mark.xdist_group(SERIAL))


@pytest.hookimpl(trylast=True)  # after xdist's, which puts each test's group in its node id
def pytest_collection_modifyitems(config, items):
    if getattr(config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        lost = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if lost:  # pytest 9.2 keeps node ids where xdist 3.8 does not write: two Rays would run at once
            raise pytest.UsageError(f"xdist did not group {len(lost)} test(s) (e.g. {lost[0]}): this pytest and "
                                    "pytest-xdist do not work together; install the versions pyproject.toml pins")
    items.sort(key=lambda item: "ray_local" not in getattr(item, "fixturenames", ()))  # stable: file order kept


@pytest.fixture(autouse=True)
def _fast_tests_start_no_ray(request, monkeypatch):
    """A test outside the slow lane that starts a Ray (in this process or in a ``caenet`` it
    runs) fails, naming the lane it belongs to: its Ray sessions go to a folder of its own
    (``RAY_TMPDIR``, inherited by its subprocesses) that must stay empty. Short: Ray's socket
    paths are capped at 107 bytes."""
    group = request.node.get_closest_marker("xdist_group")
    if request.node.get_closest_marker("slow") and not (group and SERVERS in group.args):
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="rf", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    try:
        yield
        started = sorted(p.name for p in folder.glob("ray/session_2*"))
        assert not started, (f"{request.node.nodeid} started Ray ({started}) but is not marked slow: mark it "
                             f"@pytest.mark.slow or use a fixture of conftest.STARTS_SOMETHING")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_runtest_setup(item):
    if _SHARED_RAY["up"] and "ray_local" not in getattr(item, "fixturenames", ()):
        import ray

        ray.shutdown()
        _SHARED_RAY["up"] = False


def pytest_sessionfinish(session, exitstatus):
    if _SHARED_RAY["up"]:
        import ray

        ray.shutdown()


def load_job_line(job: str, argv: list[str]):
    """``python jobs/<job> ARGV`` as the job parses it, with its config, sweep or study file and
    --set keys loaded (a mistake raises); returns (the caenet command it runs, or None for the
    scaling benchmark, and the parsed arguments)."""
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    from train_throughput import build_parser as scaling_parser

    from suite.cli import build_parser
    from suite.experiment import load as load_config
    from suite.study.study_file import load_study
    from suite.sweep.sweep_file import load_sweep

    if job == "scaling.py":
        args = scaling_parser().parse_args(argv)
        load_config(REPO / args.config, args.set)
        return None, args
    command = {"pipeline.py": "run", "sweep.py": "sweep", "study.py": "study"}[job]
    args = build_parser([command, *argv]).parse_args([command, *argv])
    if command == "sweep":
        load_sweep(REPO / args.sweep, args.set, args.profile, args.allow_identical)
    elif command == "study":
        load_study(REPO / args.study, args.set, args.profile, args.allow_identical)
    else:
        load_config(REPO / args.config, args.set, args.profile)
    return command, args


class Payload:
    """Pickles to ``os.system("touch <flag>")``: if ``flag`` appears, loading the file ran code."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


class DiskEngine:
    """``suite.training.fit``'s engine for tests: one CPU worker that keeps its epoch checkpoints
    in a folder, laid out as Ray Train's attempts are in storage (``checkpoints.latest`` finds them)."""

    rank, world, device = 0, 1, torch.device("cpu")

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "attempt-0").mkdir(parents=True, exist_ok=True)

    def folders(self) -> list:
        return sorted((self.folder / "attempt-0").glob("checkpoint_*"))

    def prepare_model(self, model):
        return model

    def resume(self, job):
        done = self.folders()
        if not done:
            return None, None, False
        state, meta = checkpoints.read(str(done[-1]))
        return state, meta, False

    def replay(self, metrics):
        pass

    def report(self, metrics, write_checkpoint):
        folder = self.folder / "attempt-0" / f"checkpoint_{int(metrics['epoch']):06d}"
        folder.mkdir()
        write_checkpoint(folder)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_marked(marker: str) -> int:
    """SIGKILL every process whose environment holds ``CAENET_TEST_RAY=<marker>``: all processes of
    a Ray that a test started with that variable (its daemons inherit it), including those whose
    title Ray changes (``ray::DashboardAgent``), which ``pkill -f <temp dir>`` misses and which
    otherwise live on after the test, each taking CPU from the tests after it."""
    needle, killed = f"CAENET_TEST_RAY={marker}\0".encode(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if needle in f.read() + b"\0":
                        os.kill(int(entry.name), 9)
                        killed += 1
            except OSError:
                continue
    return killed


@pytest.fixture(scope="module")
def ray_head():
    """A real local Ray head (``ray start --head``: GCS, dashboard and job server) on loopback.

    Yields the dashboard address for ``JobSubmissionClient``; stops only this head afterwards
    (``ray stop`` would stop every Ray on the machine, so the head's processes are killed by
    their session folder instead). The temp dir is short: socket paths are capped at 107 bytes.
    """
    import shutil
    import subprocess
    import sys
    import tempfile
    import time

    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    gcs, dash = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "CAENET_TEST_RAY": temp}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    cmd = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", "--include-dashboard=true", "--num-cpus=2", "--num-gpus=0",
           f"--object-store-memory={300 * 1024 * 1024}", f"--temp-dir={temp}", "--disable-usage-stats",
           # Free ports for the node's agents too: the defaults collide with any other Ray on
           # the machine, and a head whose dashboard agent cannot bind accepts no jobs.
           *(f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "metrics-export-port", "runtime-env-agent-port", "ray-client-server-port"))]
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        shutil.rmtree(temp, ignore_errors=True)
        pytest.fail(f"ray start --head failed: {started.stderr[-2000:]}")
    address = f"http://127.0.0.1:{dash}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + 180
        while True:  # the job server, then its agent, come up a little after `ray start` returns
            try:  # (a loaded machine answered "No available agent to submit job" at first)
                JobSubmissionClient(address).submit_job(entrypoint="true")
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(2)
        yield {"address": address, "gcs": f"127.0.0.1:{gcs}", "temp": temp}
    finally:
        kill_marked(temp)  # every process of this head, whatever its title
        subprocess.run(["pkill", "-9", "-f", temp], capture_output=True)  # and anything that names its temp dir
        subprocess.run(["pkill", "-9", "-f", f"127.0.0.1:{gcs}"], capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, data_root):
    """The MNIST pipeline at smoke scale, trained once per test session, as a user would first
    meet it: a run that names the paper's VGG16 extractor, whose ImageNet weights this offline
    machine lacks (it must stop before any training), then the whole run. test_cli_e2e checks
    both; the others use its models (the boards of test_edge, the baseline and CAE-Net that
    `caenet compare`, the sweep and the study find cached). Tests that add to its cache add
    stages only; none changes one."""
    cwd = tmp_path_factory.mktemp("run")
    env = {**os.environ, "CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled"}
    config = str(REPO / "configs" / "mnist_lenet.yaml")

    def caenet(*args, **extra_env):
        return subprocess.run([sys.executable, "-m", "suite.cli", "run", config, "--smoke", *args], cwd=cwd,
                              env={**env, **extra_env}, capture_output=True, text=True, timeout=900)

    stopped = caenet("--set", "features.extractor=vgg16-imagenet", TORCH_HOME=str(cwd / "torch-home"))
    done = {p.parent.name.rsplit("-", 1)[0] for p in (cwd / "artifacts" / "mnist").glob("*/_SUCCESS")}
    # 1 CPU per training worker: two trainings fit on 2 CPUs at once, so independent ones overlap.
    first = caenet("--summary", str(cwd / "summary.json"), "--set", "runtime.cpus_per_worker=1",
                   "--set", "runtime.progress_every_s=0.001")
    assert first.returncode == 0, first.stderr[-3000:]
    return {"cwd": cwd, "args": [config, "--set", "smoke=true"], "env": env, "stopped": stopped,
            "done_when_stopped": done, "first": first, "summary": cwd / "summary.json"}


@pytest.fixture
def cli(tmp_path, data_root, monkeypatch, capsys):
    """``caenet ARGS`` through ``suite.cli.main`` in this process, in ``tmp_path``: (returncode,
    stdout, stderr). For cases that end before any work, where a fresh process per case would
    mostly time torch's import; the SIGINT handler main() installs is put back."""
    import signal

    from suite.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAENET_DATA", str(data_root))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sigint = signal.getsignal(signal.SIGINT)

    def run(args):
        capsys.readouterr()
        try:
            code = main(args)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        finally:
            signal.signal(signal.SIGINT, sigint)  # main() installs its Ctrl-C handler
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run


_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
MY_WORKER = f"PYTEST_XDIST_WORKER={_WORKER}\0".encode() if _WORKER else b""  # b"": not under xdist


@pytest.fixture(autouse=True, scope="module")
def _reap_ray_leftovers():
    """After each test module (its Ray fixtures are torn down by then), SIGKILL Ray processes that
    this pytest run spawned and nobody owns any more: orphans (parent init) or children of this
    process, whose environment carries pytest's marker. Some Ray clients used by the cluster and
    job tests leave a ``ray::DashboardAgent`` / ``RuntimeEnvAgent`` behind that would keep taking
    CPU from every later test (and stay after the run). Not while the shared ``ray_local`` Ray
    is up: its daemons are this process's children too."""
    yield
    if _SHARED_RAY["up"]:
        return
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid not in (1, me):
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read()
            if not (cmd.startswith(b"ray::") or b"ray.util.client.server" in cmd or b"/ray/" in cmd):
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
            # spawned by this pytest process: under xdist the other worker's Ray is not ours
            if b"PYTEST_CURRENT_TEST=" not in environ or MY_WORKER not in environ + b"\0":
                continue
            os.kill(int(entry.name), 9)
        except (OSError, ValueError, IndexError):
            continue


@pytest.fixture(scope="module")  # its environment stays with the module's tests, not the worker's later ones
def s3_server(tmp_path_factory):
    """An S3-compatible server on 127.0.0.1 (moto's server mode, as Ray's and MLflow's own tests
    use) with a bucket, given to this process and its children the way a user gives a non-AWS
    endpoint (MinIO, Ceph): credentials and ``AWS_ENDPOINT_URL`` in the environment, never in a
    file. Yields {"url", "bucket", "env", "s3"} (``s3``: a boto3 client) and stops the server."""
    import boto3

    port = free_port()
    log = open(tmp_path_factory.mktemp("s3") / "moto.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": url, "MLFLOW_S3_ENDPOINT_URL": url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=url)
        s3.create_bucket(Bucket="caenet")
        yield {"url": url, "bucket": "caenet", "env": env, "s3": s3, "process": server}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
