"""The README's commands, run as a user would paste them (issue 15, item 8)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def bash_block(after_heading: str) -> str:
    """The first ```bash block after the heading ``after_heading``."""
    start = README.index(after_heading)
    match = re.search(r"```bash\n(.*?)```", README[start:], re.S)
    assert match, f"no bash block after {after_heading!r}"
    return match.group(1)


def caenet_lines(command: str) -> list[list[str]]:
    """Every ``caenet <command> ...`` line of the README's bash blocks, as argv (comments cut)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if len(words) > 1 and words[0] in ("caenet", ".venv/bin/caenet") and words[1] == command:
                lines.append(words[1:])
    return lines


def test_every_readme_run_line_parses_and_plans(cli):
    """Each ``caenet run`` example: its config and --set keys validate, and ``--dry-run`` plans it."""
    runs = caenet_lines("run")
    assert len(runs) >= 3
    for argv in runs:
        argv = [str(REPO / a) if a.startswith("configs/") else a for a in argv]
        done = cli([*argv, "--dry-run"])
        assert done.returncode == 0, (argv, done.stderr)
        assert "would run" in done.stdout or "cached" in done.stdout


def test_every_readme_sweep_line_loads():
    """Each ``caenet sweep`` example: the sweep file, its space and --set keys validate, as the
    command loads them (a line that fails as written fails here)."""
    from suite.cli import build_parser
    from suite.sweep.config import load_sweep

    sweeps = caenet_lines("sweep")
    assert len(sweeps) >= 3
    for argv in sweeps:
        args = build_parser(argv).parse_args(argv)
        load_sweep(REPO / args.sweep, args.set, args.profile)


def test_every_readme_study_line_loads(cli):
    """Each ``caenet study`` example: the study file, its variants and --set keys validate."""
    studies = caenet_lines("study")
    assert len(studies) >= 3
    for argv in studies:
        argv = [str(REPO / a) if a.startswith("configs/") else a for a in argv]
        done = cli([*(a for a in argv if a != "--dry-run"), "--dry-run"])
        assert done.returncode == 0, (argv, done.stderr)
        assert " cells: " in done.stdout


def _checkout_copy(dest: Path) -> None:
    """The checkout's tracked and untracked-not-ignored files, as a fresh clone plus set-up would have them."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(REPO / ".venv")  # what `bash scripts/setup.sh` made


@pytest.mark.slow
def test_readme_job_section_runs_as_written(tmp_path, data_root):
    """The job section's lines, verbatim, in a copy of the checkout beside ``../shared/data``.

    They run in their own PID and mount namespaces (``unshare``, as root) with a tmpfs on
    /tmp/ray: the block's ``ray stop`` then stops only the head it started, and the Ray folder
    of any other Ray on the machine is out of its reach."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root (PID namespace for the block's `ray stop`)")
    block = bash_block("### Jobs on a running cluster")
    checkout = tmp_path / "caenet-suite"
    _checkout_copy(checkout)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data_root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "CAENET_"))}
    script = "set -euo pipefail\nmkdir -p /tmp/ray && mount -t tmpfs tmpfs /tmp/ray\n" + block
    done = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "bash", "-c", script],
                          cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    assert "succeeded" in out, out[-3000:]  # `ray job submit`: "Job '...' succeeded"
    # the job's log is the suite's own lines: its epochs, not its workers' output under Ray's prefixes
    assert "[caenet] epoch 1/1  train_loss=" in out and "pid=" not in out and "core_worker" not in out, out[-3000:]

    from mlflow.tracking import MlflowClient

    store = checkout / "mlruns"
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("caenet")
    assert exp.artifact_location.startswith((store / "artifacts").as_uri()), exp.artifact_location  # not in the job's copy
    runs = client.search_runs([exp.experiment_id])
    pipeline = [r for r in runs if r.data.tags.get("kind") == "run"]
    assert len(pipeline) == 1 and pipeline[0].info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(pipeline[0].info.run_id)} >= {"config.yaml", "summary.json"}
    stages = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == pipeline[0].info.run_id}
    assert {"baseline", "autoencoder", "caenet", "evaluate"} <= stages
    assert 0.0 <= pipeline[0].data.metrics["caenet.test_acc"] <= 1.0  # evaluated (1 epoch: no accuracy claim)
    summary = json.loads(next((checkout / "artifacts" / "mnist" / "runs").glob("*/summary.json")).read_text())
    assert summary["mlflow_run_id"] == pipeline[0].info.run_id
    assert not (checkout / "mlruns" / "0").exists() and not list(checkout.glob("mlflow.db"))  # nothing in MLflow's defaults


def test_every_readme_job_line_parses(monkeypatch):
    """Each ``python jobs/X.py ...`` line of the README: its arguments parse with that job's
    parser and its config (or sweep file) and --set keys load."""
    from tests.conftest import load_job_line

    monkeypatch.setenv("PWD", str(REPO))
    seen = set()
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "python jobs/" not in line:
                continue
            job, *argv = shlex.split(os.path.expandvars(line.split("python ", 1)[1]), comments=True)
            seen.add(job)
            load_job_line(Path(job).name, argv)
    assert seen == {"jobs/pipeline.py", "jobs/sweep.py", "jobs/study.py", "jobs/scaling.py"}
