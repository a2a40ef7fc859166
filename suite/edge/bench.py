"""``caenet edge bench``: deploy exported models to every board with Fabric, run, fetch, clean up.

Boards run in parallel, one thread each. Per board: connect (host key checked against
known_hosts unless the inventory opts in to unknown keys), check the board's Python and
runtime, push the board-side runner, the models and their inputs into the board's own work
folder, run it under a timeout, fetch ``result.json``, and remove the folder. Any failure
(unreachable, authentication, host key, missing runtime, command error or timeout) ends
that board alone with a one-line reason; the other boards' results are kept.
"""

from __future__ import annotations

import json
import shlex
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from suite.edge import power as power_mod
from suite.edge import power_sources
from suite.edge.boards import BenchConfig, BoardConfig
from suite.errors import UserError
from suite import timing

RUNNER = Path(__file__).with_name("runner.py")
TIMING = Path(timing.__file__)
RUNTIME_FORMAT = {"torch": "torchscript", "onnxruntime": "onnx"}


class BoardError(UserError, RuntimeError):
    """What went wrong on one board, in one line."""


@dataclass
class BoardResult:
    board: str
    ok: bool
    error: str | None = None
    rows: list[dict] = field(default_factory=list)
    system: dict = field(default_factory=dict)
    seconds: float = 0.0  # the whole visit: connect, push, start, warm-up, windows, fetch, clean-up
    windows_s: float = 0.0  # of which inside the timed windows


def _connection(board: BoardConfig):
    kwargs = {"banner_timeout": board.connect_timeout_s, "auth_timeout": board.connect_timeout_s}
    if board.key_file:
        kwargs.update(key_filename=[str(Path(board.key_file).expanduser())], look_for_keys=False, allow_agent=False)
    conn = Connection(board.host, user=board.user, port=board.port, connect_timeout=board.connect_timeout_s,
                      connect_kwargs=kwargs)
    # Fabric accepts any host key by default; here unknown keys are refused unless opted in.
    known = Path(board.known_hosts or "~/.ssh/known_hosts").expanduser()
    if known.is_file():
        conn.client.load_host_keys(str(known))
    conn.client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if board.accept_unknown_host_key else paramiko.RejectPolicy())
    return conn


def _open(conn, board: BoardConfig) -> None:
    where = f"{board.user}@{board.host}:{board.port}"
    try:
        conn.open()
    except (socket.timeout, TimeoutError):
        raise BoardError(f"unreachable: {where} did not answer within {board.connect_timeout_s:g}s") from None
    except paramiko.AuthenticationException:
        # No key path here: this line goes to MLflow's failed_boards tag and the summary.
        raise BoardError(f"authentication failed for {where}: the board refused "
                         f"{'the key_file of its entry' if board.key_file else 'the agent/default keys'}") from None
    except paramiko.SSHException as exc:
        if "known_hosts" in str(exc):
            raise BoardError(f"{where}: host key not in {board.known_hosts or '~/.ssh/known_hosts'} "
                             "(add it with ssh-keyscan, or set accept_unknown_host_key: true)") from None
        raise BoardError(f"ssh to {where} failed: {str(exc).splitlines()[0][:160]}") from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:  # refused on every address
        reasons = sorted({(e.strerror or str(e)) for e in exc.errors.values()}) or [str(exc)]
        raise BoardError(f"unreachable: {where}: {'; '.join(reasons)}") from None
    except OSError as exc:
        raise BoardError(f"unreachable: {where}: {exc.strerror or exc}") from None


def _run(conn, command: str, timeout: float, what: str):
    try:
        result = conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
    except CommandTimedOut:
        raise BoardError(f"{what}: timed out after {timeout:g}s") from None
    if result.exited != 0:
        lines = [l for l in (result.stderr or result.stdout).splitlines() if l.strip()]
        raise BoardError(f"{what}: exit {result.exited}: {lines[-1][:200] if lines else 'no output'}")
    return result


# What a board's latencies depend on besides the model (its measurement-cache fingerprint),
# printed as JSON by the board's Python; the runtime's import is the check that it is there.
PROBE = """import json, os, platform, sys
import numpy, {module} as r
def read(p):
    try:
        return open(p).read().strip().strip(chr(0))
    except OSError:
        return None
cpu = next((l.split(":", 1)[1].strip() for l in (read("/proc/cpuinfo") or "").splitlines() if l.startswith("model name")), platform.processor())
print(json.dumps({{"python": sys.version.split()[0], "runtime_version": r.__version__, "machine": platform.machine(),
                  "kernel": platform.release(), "cpu": cpu, "cores": os.cpu_count(), "model": read("/proc/device-tree/model")}}))
"""


def probe(conn, board: BoardConfig) -> dict:
    """The board's system (Python, runtime version, CPU, kernel, cores, device model); a
    BoardError when its Python or runtime is missing."""
    module = "torch" if board.runtime == "torch" else "onnxruntime"
    command = f"{shlex.quote(board.python)} -c {shlex.quote(PROBE.format(module=module))}"
    try:
        out = _run(conn, command, 120, "runtime check").stdout
    except BoardError as exc:
        raise BoardError(f"{board.runtime} is not importable with '{board.python}' on the board ({exc})") from None
    return json.loads(out.strip().splitlines()[-1])


def board_system(board: BoardConfig) -> dict:
    """``probe`` over a connection of its own."""
    conn = _connection(board)
    try:
        _open(conn, board)
        return probe(conn, board)
    finally:
        conn.close()


def bench_board(board: BoardConfig, bench: BenchConfig, export_dir: Path, entries: list[dict], out_dir: Path,
                system: dict | None = None) -> BoardResult:
    """``entries`` of ``export_dir`` timed together on ``board``; ``system``: its ``probe``, when
    already known (skips that round trip)."""
    t0 = time.perf_counter()
    result = BoardResult(board=board.name, ok=False)
    conn = None
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        conn = _connection(board)
        _open(conn, board)
        result.system = dict(system) if system else probe(conn, board)
        work = board.workdir
        _run(conn, f"rm -rf {shlex.quote(work)} && mkdir -p {shlex.quote(work + '/power_sources')}", 60, "prepare work folder")
        uploads = [(RUNNER, "runner.py"), (TIMING, "timing.py"), *power_sources.board_files()]  # what the runner imports
        spec_models = []
        for e in entries:
            uploads += [(export_dir / e["file"], e["file"]), (export_dir / e["inputs"], e["inputs"])]
            spec_models.append({"name": e["name"], "file": e["file"], "inputs": e["inputs"]})
        spec = {"runtime": board.runtime, "threads": board.threads, "models": spec_models, "protocol": timing.Protocol.of(bench).to_dict(),
                "power": board.power.to_dict() if board.power.on_board else {"kind": "none"}}
        (out_dir / "spec.json").write_text(json.dumps(spec, indent=1))
        uploads.append((out_dir / "spec.json", "spec.json"))
        try:
            for local, remote in uploads:
                conn.put(str(local), f"{work}/{remote}")
        except (OSError, paramiko.SSHException) as exc:
            raise BoardError(f"copying files to the board failed (is its SFTP subsystem enabled?): "
                             f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}") from None
        _run(conn, f"cd {shlex.quote(work)} && {shlex.quote(board.python)} runner.py --spec spec.json --out result.json",
             board.command_timeout_s, "benchmark")
        conn.get(f"{work}/result.json", str(out_dir / "result.json"))
        raw = json.loads((out_dir / "result.json").read_text())
        result.system.update(raw.get("system", {}))
        result.rows = summarize(raw, board)
        result.windows_s = sum(w["end"] - w["start"] for w in raw.get("windows", []))
        result.ok = True
    except BoardError as exc:
        result.error = str(exc)
    except Exception as exc:  # anything else on this board stays on this board
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    finally:
        if conn is not None:
            try:
                if conn.is_connected:
                    conn.run(f"rm -rf {shlex.quote(board.workdir)}", hide=True, warn=True, timeout=60, in_stream=False)
            except Exception:
                pass
            conn.close()
        result.seconds = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------- results

def power_samples(raw: dict, board: BoardConfig) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(epoch seconds, watts, error) from the runner's raw readings, as the board's power source reads them."""
    power = raw.get("power", {})
    try:
        times, watts = board.power.samples(power.get("readings", []))
    except power_sources.PowerUnavailable as exc:
        return np.array([]), np.array([]), str(exc)
    return np.asarray(times), np.asarray(watts), power.get("error")


def summarize(raw: dict, board: BoardConfig) -> list[dict]:
    """One row per model: latency over all rounds and per round, energy per inference or N/A."""
    times, watts, power_error = power_samples(raw, board) if board.power.kind != "none" else (None, None, None)
    idle = tuple(raw["idle_window"]) if raw.get("idle_window") and raw["idle_window"][1] > raw["idle_window"][0] else None
    rows = []
    for name, stats in raw["models"].items():
        row = {"board": board.name, "board_kind": board.kind, "model": name, "runtime": raw["runtime"],
               "runtime_version": raw.get("runtime_version"), "threads": raw["threads"],
               **stats, "inferences": stats["queries"], "power_source": board.power.kind,
               "energy_mj": None, "dynamic_energy_mj": None, "idle_watts": None, "mean_watts": None, "energy_note": None}
        if board.power.kind == "none":
            row["energy_note"] = "N/A: no power source configured"
        elif len(times) == 0:
            row["energy_note"] = f"N/A: {power_error or 'no power samples'}"
        else:
            joules, seconds, n, covered = 0.0, 0.0, 0, True
            idle_w = None
            for win in (w for w in raw["windows"] if w["model"] == name):
                e = power_mod.window_energy(times, watts, win["start"], win["end"], idle, board.power.kind)
                if e.joules is None:
                    covered = False
                    break
                joules += e.joules
                seconds += win["end"] - win["start"]
                n += win["inferences"]
                idle_w = e.idle_watts
            if covered and n:
                row["energy_mj"] = 1e3 * joules / n
                row["mean_watts"] = joules / seconds
                row["idle_watts"] = idle_w
                if idle_w is not None:
                    row["dynamic_energy_mj"] = 1e3 * max(joules - idle_w * seconds, 0.0) / n
            else:
                row["energy_note"] = "N/A: fewer than 2 power samples in a timed window (lengthen bench.window_seconds)"
        rows.append(row)
    return rows


def bench_boards(boards: list[BoardConfig], bench: BenchConfig, exports: dict[str, tuple[Path, list[dict]]],
                 out_dir: Path, log=print) -> list[BoardResult]:
    """``exports``: format -> (folder, manifest entries). Boards run in parallel."""
    def one(board: BoardConfig) -> BoardResult:
        folder, entries = exports[RUNTIME_FORMAT[board.runtime]]
        log(f"[{board.name}] {board.user}@{board.host}:{board.port} ({board.kind}, {board.runtime}, {board.threads} thread(s))")
        res = bench_board(board, bench, folder, entries, out_dir / board.name)
        log(f"[{board.name}] {'done' if res.ok else 'FAILED: ' + str(res.error)} in {res.seconds:.1f}s")
        return res

    with ThreadPoolExecutor(max_workers=max(1, len(boards))) as pool:
        return list(pool.map(one, boards))
