"""What an MLflow run records about itself besides metrics: where it came from (source tags),
which settings differ from the defaults (its params), and which data it saw (dataset inputs).

Params are only the keys that differ from ``ExperimentConfig()``'s defaults, flattened, so the
MLflow UI's compare view shows what varies between runs; the whole resolved config goes beside
them as ``config.yaml``.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import suite
from suite.config import ExperimentConfig
from suite.pipeline.tracking import flatten

REPO_ROOT = Path(suite.__file__).resolve().parents[1]


def source_tags() -> dict[str, str]:
    """Git commit and dirtiness of the suite's checkout, the command line and the version.

    ``mlflow.source.*`` are MLflow's own tag names (the UI shows them in the run's header).
    A job's working copy has no ``.git``: the commit is then "unknown", not an error.
    """
    tags = {"driver": driver_id(),  # which process owns the run: a later run ends it KILLED if that process died
            "mlflow.source.name": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:5000],
            "mlflow.source.type": "JOB" if _in_ray_job() else "LOCAL",
            "command_line": shlex.join(sys.argv)[:5000], "caenet.version": suite.__version__}
    commit, dirty = _git_state()
    tags["mlflow.source.git.commit"] = commit
    tags["git_dirty"] = dirty
    return tags


def driver_id(pid: int | None = None) -> str:
    """``host:pid:start`` of a process (this one by default); the start time (clock ticks since
    boot) tells a reused pid from the process that had it. ``start`` is 0 where /proc is absent."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_started(pid)}"


def _started(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return 0


def driver_gone(driver: str) -> bool:
    """Whether the process a ``driver_id`` names has ended (False for another host's: unknown)."""
    host, _, rest = driver.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    started = _started(int(pid))
    if started == 0:  # no such process (or no /proc to read its start from)
        return not Path(f"/proc/{pid}").exists()
    return str(started) != start  # the pid now belongs to another process


def _in_ray_job() -> bool:
    return bool(os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


def _git_state() -> tuple[str, str]:
    """(commit, "true"/"false") of the checkout the suite runs from; ("unknown", "unknown") without git."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return "unknown", "unknown"
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, "unknown" if status is None else str(bool(status)).lower()


def changed_params(cfg: ExperimentConfig) -> dict[str, str]:
    """The config's keys whose values differ from the defaults, flattened (``a.b.c``, methods by
    name: ``tracking.flatten``), as text."""
    mine, default = flatten(cfg.model_dump(mode="json")), flatten(ExperimentConfig().model_dump(mode="json"))
    return {k: str(v) for k, v in mine.items() if k not in default or default[k] != v}


def dataset_digest(images, labels) -> str:
    """A short digest of what a split holds (the arrays, after limits): equal digests, equal data."""
    h = hashlib.sha256()
    h.update(images.numpy().tobytes() if hasattr(images, "numpy") else bytes(images))
    h.update(labels.numpy().tobytes() if hasattr(labels, "numpy") else bytes(labels))
    return h.hexdigest()[:16]
