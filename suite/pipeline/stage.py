"""Cached, resumable stages.

A stage's key hashes its name, version, parameters and the keys of its inputs. Its outputs
live in ``<cache>/<dataset>/<stage>-<key>/``; a stage whose folder holds ``_SUCCESS`` is not
re-run (its MLflow child run is still recorded, tagged ``cache_hit``). Work in progress goes
to ``<folder>.partial/`` (Ray Train checkpoints included) and is renamed into place only when
the stage finishes, so Ctrl-C or a crash never leaves a half-written stage that looks done,
and a re-run picks the interrupted training up from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from suite import storage as checkpoint_storage
from suite.errors import INTERRUPTED, DiskFull, UserError, disk_full, no_space_line
from suite.locks import file_lock
from suite.pipeline.tracking import Tracker
from suite.training import convergence

# The cache layout, in one place (``caenet cache`` reads it from here): a stage's folder is
# <stage>-<16 hex key>; beside it <folder>.partial while it runs and <folder>.lock while a
# process holds it; a finished folder holds SUCCESS.
SUCCESS = "_SUCCESS"
PARTIAL, LOCK = ".partial", ".lock"
STAGE_ENTRY = re.compile(r"^(?P<stage>.+)-(?P<key>[0-9a-f]{16})(?P<suffix>\.partial|\.lock)?$")


def stage_folder(cache_root: Path, name: str, key: str) -> Path:
    return cache_root / f"{name}-{key}"


@dataclass
class StageResult:
    name: str
    key: str
    path: Path
    metrics: dict
    cached: bool
    run_id: str | None = None

    def file(self, name: str) -> Path:
        return self.path / name


def stage_key(name: str, version: int, params: dict, inputs: list[StageResult]) -> str:
    blob = json.dumps({"stage": name, "version": version, "params": params, "inputs": [i.key for i in inputs]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def changed(section, **keys: str) -> dict:
    """The cache-key rule for options added after a stage shipped: ``{key: value}`` for each
    ``field=key`` of config ``section`` whose value differs from the field's default, nothing for
    one at its default. So a new option, left at its default, does not change the key of a
    finished stage (as ``MethodParams.key`` does for the methods)."""
    out = {}
    for field, key in keys.items():
        value = getattr(section, field)
        if value != type(section).model_fields[field].get_default(call_default_factory=True):
            out[key] = value.model_dump() if hasattr(value, "model_dump") else value
    return out


class StageMissing(UserError, RuntimeError):
    """A stage that lookup-only mode needed but that has not been run for this config."""


class StageRunner:
    def __init__(self, cache_root: Path, tracker: Tracker | None, log: Callable[[str], None] = print,
                 require_cached: bool = False, storage: str | None = None, plan: bool = False):
        self.cache_root = cache_root
        # runtime.storage: where trainings keep checkpoints when not in the stage's folder
        self.storage = storage
        self.tracker = tracker
        self.log = log
        self.results: dict[str, StageResult] = {}
        # Lookup only (export, edge bench): finished stages are found, nothing is trained.
        self.require_cached = require_cached
        # Plan only (``caenet run --dry-run``): every stage is keyed and looked up, none runs;
        # ``planned`` lists them in order (``cached`` False: it would run).
        self.plan = plan
        self.planned: list[StageResult] = []

    def _folder(self, name: str, key: str) -> Path:
        return stage_folder(self.cache_root, name, key)

    def finished(self, name: str, version: int, params: dict, inputs: list[StageResult]) -> bool:
        """Whether the stage is in the cache, finished (its inputs' keys must be known)."""
        return (self._folder(name, stage_key(name, version, params, inputs)) / SUCCESS).exists()

    def run(self, name: str, version: int, params: dict, inputs: list[StageResult],
            body: Callable[[Path, str | None], dict], artifacts: Callable[[Path], list[Path]] | None = None) -> StageResult:
        """Run ``body(work_dir, mlflow_run_id) -> metrics`` unless a finished copy exists."""
        key = stage_key(name, version, params, inputs)
        final = self._folder(name, key)
        if self.plan:
            result = StageResult(name, key, final, {}, (final / SUCCESS).exists())
            self.planned.append(result)
            self.results[name] = result
            return result
        # Concurrent sweep trials, or two `caenet run` of overlapping configs, wait for and
        # then reuse a stage that another process is running.
        with _stage_lock(final, lambda path: self.log(f"[{name}] waiting: another run is running this stage ({path})")):
            return self._run_locked(name, key, final, params, body, artifacts)

    def _run_locked(self, name, key, final, params, body, artifacts) -> StageResult:
        tracker = self.tracker
        if (final / SUCCESS).exists():
            metrics = json.loads((final / "metrics.json").read_text())
            run_id = None
            if tracker:
                run_id = tracker.start_child(name, params, {"cache_hit": "true", "stage_key": key, "stage_dir": str(final)})
                tracker.log_metrics(run_id, metrics, _final_step(metrics))
                self._flag_unconverged(name, metrics, run_id)
                tracker.end(run_id)
            self.log(f"[{name}] cached ({final})")
            result = StageResult(name, key, final, metrics, True, run_id)
            self.results[name] = result
            return result

        if self.require_cached:
            raise StageMissing(f"stage '{name}' has not finished for this config under {self.cache_root}; "
                               "run `caenet run` with the same config first")
        work = final.with_name(final.name + PARTIAL)
        work.mkdir(parents=True, exist_ok=True)
        (work / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True, default=str))
        run_id = tracker.start_child(name, params, {"cache_hit": "false", "stage_key": key, "stage_dir": str(final)}) if tracker else None
        self.log(f"[{name}] running -> {final}")
        t0 = time.perf_counter()
        try:
            metrics = body(work, run_id)
        except BaseException as exc:
            if tracker and run_id:
                if getattr(exc, "nothing_done", False):  # a lookup that found nothing to finish
                    tracker.delete(run_id)
                else:
                    tracker.end(run_id, "KILLED" if _interrupted() else "FAILED")
            if isinstance(exc, Exception) and not isinstance(exc, UserError) and disk_full(work):
                raise DiskFull(no_space_line(f" in stage '{name}' ({work})")) from exc
            raise
        metrics = dict(metrics)
        metrics["stage_seconds"] = round(time.perf_counter() - t0, 3)
        self._flag_unconverged(name, metrics, run_id)
        (work / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        shutil.rmtree(work / "ray", ignore_errors=True)  # checkpoints: the stage keeps final weights
        if self.storage:
            checkpoint_storage.delete(checkpoint_storage.job_storage(self.storage, self.cache_root, work))
        if tracker and run_id:
            tracker.log_final_metrics(run_id, metrics, _final_step(metrics))
            for path in (artifacts(work) if artifacts else []):
                tracker.log_artifact(run_id, path)
            tracker.end(run_id)
        (work / SUCCESS).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        self.log(f"[{name}] done in {metrics['stage_seconds']:.1f}s")
        result = StageResult(name, key, final, metrics, False, run_id)
        self.results[name] = result
        return result

    def _flag_unconverged(self, name: str, metrics: dict, run_id: str | None) -> None:
        """A training that did not learn (suite.training.convergence): a warning line and tags on its run."""
        why = convergence.verdict(metrics)
        if why is None:
            return
        self.log(f"[{name}] WARNING: did not converge: {why}")
        if self.tracker and run_id:
            self.tracker.set_tag(run_id, "converged", "false")
            self.tracker.set_tag(run_id, "convergence", str(why)[:500])


def _final_step(metrics: dict) -> int:
    """The step of a stage's final numbers: its last epoch, where its per-epoch curve ends (a
    point at step 0 would start every curve with the final value), else 0."""
    return int(metrics.get("epoch", 0) or 0)


def _stage_lock(final: Path, waiting: Callable[[Path], None]):
    """An exclusive lock on ``<stage>.lock``: one process runs a stage, the others wait
    (``waiting`` is told once) and then find it finished."""
    path = final.with_name(final.name + LOCK)
    return file_lock(path, lambda _: waiting(path))


def _interrupted() -> bool:
    return isinstance(sys.exc_info()[1], KeyboardInterrupt) or INTERRUPTED.is_set()
