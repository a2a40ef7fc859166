"""Power sources: one module per ``power.kind``, each a ``@register``-ed ``PowerSource``.

A source is its own config (dataclass fields: the keys of a board's ``power:`` mapping),
its board-side sampling (``sample``) and its controller-side reading of those samples
(``watts`` or ``samples``). The first lookup imports every module of this package, so
boards.py (validation), runner.py (sampling) and bench.py (energy) never list the kinds:
adding a source is one new file here plus its test.

This package is copied next to runner.py on the boards (``board_files``), which have no
suite and no pydantic there: its modules import only the standard library, numpy, and
each other relatively. Field ``metadata`` holds pydantic ``Field`` constraints (``ge``,
``le``, ...) that boards.py applies on the controller.

A malformed reading raises ``PowerParseError`` naming it, except in ``samples`` and the batch
parsers, which skip it (the parsers count it): a meter log with a garbled row stays usable.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field, fields
from typing import ClassVar

# The suite's one discovery helper: on a board, where this package runs without the suite,
# suite.edge.bench copies it beside the package as plugins.py (board_files).
plugins = importlib.import_module("suite.plugins" if __name__.startswith("suite.") else "plugins")


class PowerParseError(ValueError):
    """A power reading that cannot be parsed; the message names the input."""


class PowerUnavailable(Exception):
    """No readings to be had (no device on the board, no meter export): energy is N/A for this reason."""


def read(path: str) -> str | None:
    """A sysfs file's stripped text, or None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def parse_sysfs_int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise PowerParseError(f"{what}: expected an integer, got {text.strip()[:40]!r}") from None


@dataclass
class PowerSource:
    """Base of every source; its instance is one board's validated ``power:`` settings.

    Board side: ``sample(stop)`` yields raw JSON-able readings until ``stop`` is set (the
    runner stamps each with the time); a source that reads on the controller, or not at all,
    does not define it. Controller side: ``samples(readings)`` gives (epoch seconds, watts);
    the default parses each reading with ``watts`` and skips those that raise PowerParseError.
    """

    kind: ClassVar[str]
    idle_seconds: float = field(default=5.0, metadata={"ge": 0})  # idle power measured before the timed rounds

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Rules across fields; raise ValueError with the one-line message a user sees."""

    def sample(self, stop: threading.Event):
        raise NotImplementedError

    @property
    def on_board(self) -> bool:
        """Whether the runner samples this source on the board (it defines ``sample``)."""
        return type(self).sample is not PowerSource.sample

    def watts(self, reading) -> float:
        raise NotImplementedError(f"power source {self.kind!r} defines neither watts nor samples")

    def samples(self, readings: list) -> tuple[list, list]:
        times, watts = [], []
        for ts, reading in readings:
            try:
                watts.append(self.watts(reading))
            except PowerParseError:
                continue
            times.append(ts)
        return times, watts

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, power: dict) -> "PowerSource":
        """The source from ``to_dict``'s output (on the board: values already validated)."""
        return cls(**{k: v for k, v in power.items() if k != "kind"})


@dataclass
class Polled(PowerSource):
    """A source read every ``interval_ms`` (sysfs counters and sensors, tegrastats' period)."""

    interval_ms: int = field(default=500, metadata={"ge": 10})  # sampling period

    def ticks(self, stop: threading.Event):
        """Yields once per period until ``stop`` is set."""
        while not stop.is_set():
            yield
            stop.wait(self.interval_ms / 1000.0)


_SOURCES: dict[str, type[PowerSource]] = {}


def register(cls: type) -> type[PowerSource]:
    """Class decorator: makes ``cls`` a dataclass and the source of ``power.kind: cls.kind``."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, PowerSource)) or not isinstance(cls.__dict__.get("kind"), str):
        raise TypeError(f"{where}: a power source subclasses PowerSource and sets kind = '<name>'")
    cls = dataclass(cls)
    other = _SOURCES.get(cls.kind)
    if other is not None and f"{other.__module__}.{other.__qualname__}" != where:
        raise TypeError(f"power source {cls.kind!r} is registered twice: {other.__module__} and {cls.__module__}")
    _SOURCES[cls.kind] = cls
    return cls


def _registered() -> dict[str, type[PowerSource]]:
    """Every source, after importing each module of this package (every folder of its path) once."""
    plugins.discover(__name__)
    return _SOURCES


def kinds() -> list[str]:
    """Every ``power.kind``: "none" first, then by name."""
    return sorted(_registered(), key=lambda k: (k != "none", k))


def get(kind: str) -> type[PowerSource]:
    try:
        return _registered()[kind]
    except KeyError:
        raise LookupError(f"unknown power source {kind!r}; choose one of {', '.join(kinds())}") from None


def board_files() -> list[tuple[str, str]]:
    """(local path, path next to runner.py) of this package's files, for bench.py to copy to a board."""
    files = [(__file__, "power_sources/__init__.py"), (plugins.__file__, "plugins.py")]
    for name, path in plugins.files(__name__).items():
        files.append((path, f"power_sources/{name}.py"))
    return files
