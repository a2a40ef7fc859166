"""The power-source registry: a source in a module of its own is validated by the boards file,
sampled by the board-side runner (also on a "board" without the suite or pydantic, shipped by
bench.py's own push code) and read into watts and energy by bench, with no other file edited."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from suite import plugins
from suite import timing
from suite.config import ConfigError
from suite.edge import bench, power_sources, runner
from suite.edge.boards import BenchConfig, BoardConfig, load_inventory

REPO = Path(__file__).resolve().parents[1]

# A whole power source, as a contributor would add it to suite/edge/power_sources/.
FAKEMETER = '''
"""fakemeter: watts from a text file that something else keeps current (a test stand-in for a meter)."""

from dataclasses import field

from . import Polled, PowerParseError, register


@register
class FakeMeter(Polled):
    kind = "fakemeter"
    path: str = ""  # the file holding the current watts, on the board
    scale: float = field(default=1.0, metadata={"gt": 0})  # calibration factor

    def check(self):
        if not self.path:
            raise ValueError("fakemeter needs path: the file that holds the watts")

    def sample(self, stop):
        for _ in self.ticks(stop):
            with open(self.path) as f:
                yield f.read().strip()

    def watts(self, text):
        try:
            return float(text) * self.scale
        except ValueError:
            raise PowerParseError(f"fakemeter: not a number: {text[:40]!r}") from None
'''


@pytest.fixture
def fakemeter(tmp_path, monkeypatch):
    """FAKEMETER as one more module of the package (its folder on the package's path), dropped afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "fakemeter.py").write_text(FAKEMETER)
    power_sources.kinds()  # the built-ins, scanned before the registry is swapped for a copy
    monkeypatch.setattr(power_sources, "__path__", [*power_sources.__path__, str(folder)])
    monkeypatch.setattr(power_sources, "_SOURCES", dict(power_sources._SOURCES))
    monkeypatch.setattr(plugins, "_discovered", plugins._discovered - {power_sources.__name__})
    watts = tmp_path / "watts.txt"
    watts.write_text("2.5\n")
    yield watts
    sys.modules.pop(f"{power_sources.__name__}.fakemeter", None)


def test_builtin_sources_registered():
    assert power_sources.kinds() == ["none", "hwmon", "rapl", "rd-usb", "tegrastats"]
    for kind in power_sources.kinds():
        module = power_sources.get(kind).__module__
        assert module.startswith("suite.edge.power_sources.") and Path(sys.modules[module].__file__).parent.name == "power_sources"
    on_board = {k for k in power_sources.kinds() if power_sources.get(k)(**({"csv": "m.csv"} if k == "rd-usb" else {})).on_board}
    assert on_board == {"hwmon", "rapl", "tegrastats"}  # rd-usb is read on the controller, none nowhere
    with pytest.raises(LookupError, match="unknown power source 'fakemeter'; choose one of none, hwmon"):
        power_sources.get("fakemeter")
    with pytest.raises(TypeError, match="sets kind"):
        power_sources.register(type("Nameless", (power_sources.Polled,), {}))
    with pytest.raises(TypeError, match="'rapl' is registered twice"):
        power_sources.register(type("Rapl2", (power_sources.Polled,), {"kind": "rapl"}))
    shipped = {remote for _, remote in power_sources.board_files()}
    assert shipped == {"power_sources/__init__.py", "plugins.py", *(f"power_sources/{m}.py" for m in ("hwmon", "none", "rapl", "rdusb", "tegrastats"))}


def test_example_boards_file_keeps_its_format(tmp_path):
    tree = yaml.safe_load((REPO / "configs" / "boards.example.yaml").read_text())
    for board in tree["boards"]:
        board.pop("key_file", None)  # the example's key is not on this machine
    path = tmp_path / "boards.yaml"
    path.write_text(yaml.safe_dump(tree))
    pi4, nano = load_inventory(path).boards
    assert (pi4.power.kind, pi4.power.csv, pi4.power.on_board) == ("rd-usb", "~/rd-usb/pi4-session.csv", False)
    assert (nano.power.kind, nano.power.interval_ms, nano.power.idle_seconds) == ("tegrastats", 500, 5.0)
    assert nano.model_dump()["power"] == {"kind": "tegrastats", "idle_seconds": 5.0, "interval_ms": 500}
    assert BoardConfig(name="b", host="h", user="u").power.kind == "none"
    for power, message in [({"kind": "rd-usb"}, "power: rd-usb needs csv: the path of rd-usb's CSV export"),
                           ({"kind": "tegrastats", "interval_ms": 5}, "power.interval_ms: Input should be greater than or equal to 10"),
                           ({"kind": "hwmon", "csv": "x.csv"}, "power.csv: unknown key"),
                           ({"kind": "fakemeter", "path": "w"}, "power.kind: Input should be 'none', 'hwmon', 'rapl', 'rd-usb' or 'tegrastats'")]:
        tree["boards"][1]["power"] = power
        path.write_text(yaml.safe_dump(tree))
        with pytest.raises(ConfigError, match=message):
            load_inventory(path)


def test_new_source_is_accepted_by_the_boards_file(fakemeter, tmp_path):
    path = tmp_path / "boards.yaml"
    path.write_text(f"boards:\n  - {{name: meter, host: h, user: u, power: {{kind: fakemeter, path: {fakemeter}, scale: 2, interval_ms: 20}}}}\n")
    power = load_inventory(path).boards[0].power
    assert type(power).__name__ == "FakeMeter" and power.kind == "fakemeter"
    assert (power.path, power.scale, power.interval_ms, power.idle_seconds) == (str(fakemeter), 2.0, 20, 5.0)
    assert "fakemeter" in power_sources.kinds() and power.on_board
    for bad, message in [({}, "power: fakemeter needs path"), ({"path": "w", "scale": 0}, "power.scale: Input should be greater than 0"),
                         ({"path": "w", "csv": "x"}, "power.csv: unknown key"), ({"path": "w", "scale": "big"}, "power.scale: Input should be a valid number")]:
        with pytest.raises(ConfigError, match=message):
            path.write_text(yaml.safe_dump({"boards": [{"name": "m", "host": "h", "user": "u", "power": {"kind": "fakemeter", **bad}}]}))
            load_inventory(path)


def test_new_source_sampled_by_the_runner_and_read_by_bench(fakemeter):
    board = BoardConfig(name="meter", host="h", user="u", power={"kind": "fakemeter", "path": str(fakemeter), "scale": 2, "interval_ms": 10})
    sampler = runner.Sampler(json.loads(json.dumps(board.power.to_dict())))  # what spec.json carries
    sampler.start()
    time.sleep(0.3)
    sampler.stop()
    assert sampler.error is None and not sampler._thread.is_alive()
    readings = sampler.readings
    assert len(readings) >= 5 and {r for _, r in readings} == {"2.5"}
    stamps = [t for t, _ in readings]
    assert stamps == sorted(stamps)

    readings.insert(2, (stamps[1] + 1e-4, "garbled"))  # skipped, as a malformed line of any source
    t, w, error = bench.power_samples({"power": {"readings": readings}}, board)
    assert error is None and len(w) == len(stamps) and set(w) == {5.0}
    start, end = stamps[1], stamps[-1]
    raw = {"runtime": "torch", "threads": 1, "idle_window": [stamps[0], stamps[1]],
           "models": {"m": timing.summarize([[1.0] * 100])},  # what the runner's timing protocol returns
           "windows": [{"model": "m", "round": 0, "start": start, "end": end, "inferences": 100}],
           "power": {"kind": "fakemeter", "error": None, "readings": readings}}
    row = bench.summarize(raw, board)[0]
    assert row["power_source"] == "fakemeter" and row["energy_note"] is None
    assert row["mean_watts"] == pytest.approx(5.0) and row["idle_watts"] == pytest.approx(5.0)
    assert row["energy_mj"] == pytest.approx(1e3 * 5.0 * (end - start) / 100)


def test_sampling_failure_is_a_reason_not_a_crash(fakemeter):
    sampler = runner.Sampler({"kind": "fakemeter", "path": str(fakemeter.with_name("absent.txt")), "interval_ms": 10})
    sampler.start()
    sampler.stop()
    assert sampler.error.startswith("fakemeter: [Errno 2] No such file or directory") and sampler.readings == []


class LocalBoard:
    """Fabric's Connection as bench_board uses it, on this machine: commands in a shell, files copied."""

    def __init__(self, env):
        self.env, self.is_connected = env, True

    def run(self, command, timeout=None, **_):
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout, env=self.env)
        return SimpleNamespace(exited=done.returncode, stdout=done.stdout, stderr=done.stderr)

    def put(self, local, remote):
        shutil.copyfile(local, remote)

    def get(self, remote, local):
        shutil.copyfile(remote, local)

    def close(self):
        self.is_connected = False


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit, the export format boards run
def test_bench_ships_the_new_source_to_a_board_without_the_suite(fakemeter, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    exports = tmp_path / "exports"
    exports.mkdir()
    torch.jit.trace(torch.nn.Linear(4, 2), torch.zeros(1, 4)).save(str(exports / "m.pt"))
    np.save(exports / "m_inputs.npy", np.zeros((8, 4), np.float32))
    # The "board" has neither the suite nor pydantic: importing either there fails.
    blocked = tmp_path / "not_on_board"
    blocked.mkdir()
    for name in ("suite", "pydantic"):
        (blocked / f"{name}.py").write_text("raise ImportError('not on the board')\n")
    monkeypatch.setattr(bench, "_connection", lambda board: LocalBoard({"PATH": "/usr/bin:/bin", "PYTHONPATH": str(blocked)}))
    monkeypatch.setattr(bench, "_open", lambda conn, board: None)
    board = BoardConfig(name="meter", host="h", user="u", python=sys.executable, workdir=str(tmp_path / "work"),
                        power={"kind": "fakemeter", "path": str(fakemeter), "scale": 2, "interval_ms": 20, "idle_seconds": 0.3})
    res = bench.bench_board(board, BenchConfig(warmup=1, windows=2, window_queries=5, window_seconds=0.25, max_windows=2), exports,
                            [{"name": "m", "file": "m.pt", "inputs": "m_inputs.npy"}], tmp_path / "out")
    assert res.ok, res.error
    raw = json.loads((tmp_path / "out" / "result.json").read_text())
    assert raw["power"]["kind"] == "fakemeter" and raw["power"]["error"] is None and len(raw["power"]["readings"]) >= 10
    row = res.rows[0]
    assert row["power_source"] == "fakemeter" and row["energy_note"] is None
    assert row["mean_watts"] == pytest.approx(5.0) and row["idle_watts"] == pytest.approx(5.0)
    timed_s = sum(w["end"] - w["start"] for w in raw["windows"])  # 5 W over every timed window
    assert len(raw["windows"]) == 2 and row["energy_mj"] == pytest.approx(1e3 * 5.0 * timed_s / row["inferences"])
    assert not Path(board.workdir).exists()  # cleaned up as on a real board
