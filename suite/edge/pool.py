"""The boards as a shared Ray resource: one actor per board, each timing one set of models at a
time (a board that runs two benchmarks at once times neither), reachable by name from any
process of the Ray job (``board_actor``, ``time_on_board``), so callers on any node queue for a
board: the sweep's timing pass, ``caenet compare --boards`` and the ``slo_prune`` loop.

The actors sit on the driver's node by default, where the boards file's SSH keys are: only
that node needs to reach the boards. Models travel to them as bytes (exported TorchScript or
ONNX plus their input images), so a caller need not share a filesystem with the driver.

``time_on_boards``: the baseline and each architecture timed on every board, in alternating
windows, once per board fingerprint (the measurement cache, ``suite.pipeline.latency_cache``),
one architecture per visit so that a board lost mid-way keeps what it measured; boards run
in parallel, a failing board ends alone with a one-line reason.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from suite.edge.bench import RUNTIME_FORMAT, BoardError, bench_board, board_system
from suite.edge.boards import BenchConfig, BoardConfig, Inventory
from suite.edge.model_files import ExportError, export_model, ready_onnx
from suite.pipeline.latency_cache import LatencyCache, Timed, time_cached
from suite.timing import Protocol

ACTOR_PREFIX = "caenet-board-"


class BoardActor:
    """One board, behind a Ray actor with one method running at a time."""

    def __init__(self, board: dict, bench: dict):
        self.board = BoardConfig.model_validate(board)
        self.bench = BenchConfig.model_validate(bench)
        self.system: dict | None = None

    def config(self) -> tuple[dict, dict]:
        """The board's and the protocol's settings, for callers that only know its name."""
        return self.board.model_dump(mode="json"), self.bench.model_dump()

    def probe(self) -> dict:
        """The board's fingerprint (Python, runtime, CPU, kernel), asked once per actor."""
        if self.system is None:
            self.system = board_system(self.board)
        return self.system

    def measure(self, files: dict[str, bytes], entries: list[dict]) -> dict:
        """Time ``entries`` (manifest entries whose files are in ``files``) together on the board;
        returns the BoardResult's fields (``ok`` False with a one-line ``error`` on failure)."""
        with tempfile.TemporaryDirectory(prefix="caenet-board-") as tmp:
            folder = Path(tmp)
            for name, blob in files.items():
                (folder / name).write_bytes(blob)
            res = bench_board(self.board, self.bench, folder, entries, folder / "out", system=self.system)
        return vars(res)


def board_actor(name: str):
    """The actor of board ``name`` from any process of the job (a trial, a method)."""
    try:
        return ray.get_actor(ACTOR_PREFIX + name)
    except ValueError:
        raise BoardError(f"board {name!r} is not in this run's pool: give the boards file that names it with --boards") from None


@dataclass
class BoardTiming:
    """One board's part of a timing pass."""

    board: str
    timed: Timed | None = None  # None: the board never answered
    system: dict = field(default_factory=dict)
    error: str | None = None  # one line: why some or all of its rows are N/A
    visits: list = field(default_factory=list)  # per benchmark run: models, seconds, windows_s
    export_s: float = 0.0
    not_exported: dict = field(default_factory=dict)  # label -> why it could not be exported for this board

    def tags(self) -> dict[str, str]:
        """The board's system info as MLflow tags, ``board.<name>.<key>`` (CPU, kernel, runtimes)."""
        return {f"board.{self.board}.{key}": str(self.system[key])[:250]
                for key in ("cpu", "kernel", "machine", "python", "runtime_version", "model") if self.system.get(key)}


class Exports:
    """Each (label, format) exported once, as the bytes a board actor receives; thread-safe.
    ``ready``: label -> an ONNX file made by other tooling (onnxruntime's int8), used as that
    label's ONNX instead of an export."""

    def __init__(self):
        self.done: dict = {}
        self.failed: dict = {}
        self.ready: dict[str, Path] = {}
        self._lock = threading.Lock()

    def get(self, labels: list[str], models: dict, images: torch.Tensor, fmt: str) -> tuple[list[dict], dict]:
        """Manifest entries and file bytes of those ``labels`` that export to ``fmt`` (the others
        are in ``failed`` with their one-line reason)."""
        entries, files = [], {}
        for label in labels:
            with self._lock:
                if (label, fmt) not in self.done and (label, fmt) not in self.failed:
                    try:
                        with tempfile.TemporaryDirectory(prefix="caenet-export-") as tmp:
                            if fmt == "onnx" and label in self.ready:
                                entry = ready_onnx(_safe(label), self.ready[label], models[label], images, Path(tmp))
                            else:
                                entry = export_model(_safe(label), models[label], images, fmt, Path(tmp), whole_only=True)[0]
                            blobs = {entry[k]: (Path(tmp) / entry[k]).read_bytes() for k in ("file", "inputs")}
                        self.done[label, fmt] = ({**entry, "name": label}, blobs)
                    except ExportError as exc:
                        self.failed[label, fmt] = str(exc)
                    except Exception as exc:  # a model the exporter cannot take (e.g. already TorchScript for ONNX)
                        self.failed[label, fmt] = f"{label} -> {fmt}: {_reason(exc)}"
            if (label, fmt) in self.done:
                entry, blobs = self.done[label, fmt]
                entries.append(entry)
                files.update(blobs)
        return entries, files


def time_on_board(actor, models: dict[str, torch.nn.Module], architectures: dict[str, list], images: torch.Tensor,
                  cache: LatencyCache | None, baseline: str = "baseline", log=print, exports: Exports | None = None,
                  name: str | None = None, beside: list | None = None) -> BoardTiming:
    """``models`` (label -> model; ``architectures``: label -> its cache identity, e.g.
    [registry name, kwargs], for each but ``baseline``) timed beside the baseline on the board
    behind ``actor``, one label per visit, unless the cache has them for the board's fingerprint.
    ``beside``: the identity of a ``baseline`` that is not the run's baseline (the int8 one that
    int8 rows are timed beside), so that the cache keeps their pairings apart.
    Works from any process of the Ray job; the actor queues callers. A failure is kept in
    ``error`` (one line) with what was measured before it."""
    exports = exports or Exports()
    try:
        board, bench = ray.get(actor.config.remote())
        board, bench = BoardConfig.model_validate(board), BenchConfig.model_validate(bench)
        out = BoardTiming(board.name)
        out.system = ray.get(actor.probe.remote())
    except Exception as exc:
        return BoardTiming(name or "?", error=_reason(exc))
    fmt = RUNTIME_FORMAT[board.runtime]
    images = images[: bench.images]  # what the board feeds the models (and the export check runs)
    runs_as = {"format": fmt, "runtime": board.runtime, "threads": board.threads, "protocol": Protocol.of(bench).to_dict(),
               "board": {k: out.system.get(k) for k in ("cpu", "cores", "machine", "kernel", "python", "runtime_version", "model")}}
    if beside is not None:
        runs_as["beside"] = beside

    def measure(labels: list[str]) -> dict:
        t0 = time.perf_counter()
        entries, files = exports.get([baseline, *labels], models, images, fmt)
        out.export_s += time.perf_counter() - t0
        if not entries or entries[0]["name"] != baseline:
            raise BoardError(f"the baseline does not export to {fmt}: {exports.failed.get((baseline, fmt))}")
        for label in labels:
            if (label, fmt) in exports.failed:
                out.not_exported[label] = exports.failed[label, fmt]
                log(f"[{board.name}] {label}: N/A ({exports.failed[label, fmt]})")
        if len(entries) == 1 and labels:
            return {}
        res = ray.get(actor.measure.remote(files, entries))
        if not res["ok"]:
            raise BoardError(res["error"])
        out.visits.append({"models": len(entries), "seconds": res["seconds"], "windows_s": res["windows_s"]})
        log(f"[{board.name}] timed {', '.join(e['name'] for e in entries[1:]) or baseline} beside the baseline in "
            f"{res['seconds']:.1f}s ({res['windows_s']:.1f}s inside the timed windows)")
        return {row["model"]: row for row in res["rows"]}

    try:
        out.timed = time_cached(architectures, runs_as, measure, cache, baseline, chunk=1,
                                failure=(BoardError, ray.exceptions.RayError))
    except Exception as exc:  # anything else on this board stays on this board
        out.error = _reason(exc)
        return out
    out.error = out.timed.error and _reason(out.timed.error)
    return out


class BoardPool:
    """One actor per board of ``inventory``, on this (the driver's) node; ``close`` ends them."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.actors = {b.name: ray.remote(BoardActor).options(
            name=ACTOR_PREFIX + b.name, get_if_exists=True, num_cpus=0, max_concurrency=1, scheduling_strategy=here,
        ).remote(b.model_dump(mode="json"), inventory.bench.model_dump()) for b in inventory.boards}
        self.exports = Exports()

    def close(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor)
        self.actors = {}

    def __enter__(self) -> "BoardPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def time_on_boards(self, models: dict[str, torch.nn.Module], architectures: dict[str, list], images: torch.Tensor,
                       cache: LatencyCache | None, baseline: str = "baseline", log=print,
                       beside: list | None = None) -> dict[str, BoardTiming]:
        """``time_on_board`` on every board in parallel (``images``: the test images the boards
        feed the models)."""
        def one(name: str) -> BoardTiming:
            return time_on_board(self.actors[name], models, architectures, images, cache, baseline, log, self.exports, name,
                                 beside)

        with ThreadPoolExecutor(max_workers=max(1, len(self.actors))) as pool:
            return {t.board: t for t in pool.map(one, list(self.actors))}


def _safe(label: str) -> str:
    """A file name for a label (an architecture's label is its JSON)."""
    plain = label.replace("-", "").replace("_", "").replace(".", "").isalnum()
    return label if plain else "arch-" + hashlib.sha256(label.encode()).hexdigest()[:12]


def _reason(exc) -> str:
    """One line of why a board failed: a BoardError's own line, an actor's last line."""
    text = str(exc).strip()
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BoardError):
        text = str(exc.cause)
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]
