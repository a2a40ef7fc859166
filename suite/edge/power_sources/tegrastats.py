"""tegrastats: Jetson boards' own rail monitor, run on the board for the whole benchmark.

JetPack 4 prints rails as ``POM_5V_IN 4520/4680`` (mW, now/avg), JetPack 5/6 as
``VDD_IN 5263mW/5263mW``; the board's input rail is the total.
"""

from __future__ import annotations

import re
import subprocess
import threading
from datetime import datetime


from . import Polled, PowerParseError, register

# JetPack 4: "POM_5V_IN 4520/4680"; JetPack 5/6: "VDD_IN 5263mW/5263mW" (also with avg after /)
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)(mW)?/(\d+)(mW)?\b")
INPUT_RAILS = ("POM_5V_IN", "VDD_IN")  # the board's total input, JetPack 4 and 5/6
_TEGRA_TIME = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")


def tegrastats_rails(line: str) -> dict[str, float]:
    """Every power rail on one tegrastats line: name -> instantaneous milliwatts."""
    rails = {}
    for name, now, unit_now, _avg, _unit_avg in _RAIL.findall(line):
        if name.startswith(("POM_", "VDD_", "VIN_")) or unit_now:
            rails[name] = float(now)
    return rails


def parse_tegrastats_line(line: str) -> float:
    """Watts drawn by the whole board at this line (its input rail)."""
    rails = tegrastats_rails(line)
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name] / 1000.0
    if rails:  # a module without an input rail: the rails' sum is the best total there is
        return sum(rails.values()) / 1000.0
    raise PowerParseError(f"tegrastats: no power rail in line {line.strip()[:120]!r}")


def tegrastats_line_time(line: str) -> float | None:
    """Epoch seconds of a line that starts with tegrastats' own timestamp (JetPack 5+), else None."""
    m = _TEGRA_TIME.match(line.strip())
    if not m:
        return None
    return datetime.strptime(m.group(1), "%m-%d-%Y %H:%M:%S").timestamp()


def _end(proc: subprocess.Popen, stop: threading.Event | None = None) -> None:
    """Ends tegrastats (once ``stop`` is set, if given)."""
    if stop is not None:
        stop.wait()
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


@register
class Tegrastats(Polled):
    kind = "tegrastats"

    def sample(self, stop):
        proc = subprocess.Popen(["tegrastats", "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        # Ended as soon as the runner stops, not at the next line: no tegrastats outlives the run.
        threading.Thread(target=_end, args=(proc, stop), daemon=True).start()
        try:
            for line in proc.stdout:
                yield line.rstrip("\n")
        finally:
            _end(proc)

    def watts(self, line: str) -> float:
        return parse_tegrastats_line(line)
