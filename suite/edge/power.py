"""Power sources and energy per inference.

Each reader turns what a board (or a USB meter) exposes into ``(t seconds, watts)`` samples;
``energy`` integrates them over the timed window. Sources:

  tegrastats  Jetson boards. JetPack 4 prints rails as ``POM_5V_IN 4520/4680`` (mW, now/avg),
              JetPack 5/6 as ``VDD_IN 5263mW/5263mW``; the board's input rail is the total.
  rd-usb      CSV exported by rd-usb from a UM34C/UM24C/UM25C USB meter (the paper's Pi 4 set-up);
              columns are found by header name; samples come about twice a second, so timed
              windows should last a minute or more.
  rapl        Linux powercap counters (``/sys/class/powercap/intel-rapl:N/energy_uj``),
              cumulative microjoules that wrap at ``max_energy_range_uj``.
  hwmon       INA2xx sensors under ``/sys/class/hwmon`` (``power1_input`` in microwatts, or
              ``in1_input`` mV x ``curr1_input`` mA).
  none        no power source: energy is N/A, never estimated.

Malformed lines raise ``PowerParseError`` naming the line, except in the batch parsers,
which skip them and count them (a meter log with a garbled row stays usable).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np


class PowerParseError(ValueError):
    """A power reading that cannot be parsed; the message names the input."""


# ---------------------------------------------------------------------------- tegrastats

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


def parse_tegrastats(text: str, interval_s: float, start_s: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """(times, watts, skipped lines) of a tegrastats log sampled every ``interval_s`` seconds."""
    times, watts, skipped = [], [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            w = parse_tegrastats_line(line)
        except PowerParseError:
            skipped += 1
            continue
        times.append(start_s + interval_s * len(watts))
        watts.append(w)
    return np.asarray(times), np.asarray(watts), skipped


# ---------------------------------------------------------------------------- rd-usb

def parse_rdusb_csv(text: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(unix times, watts, skipped rows) from an rd-usb CSV export, columns found by header name.

    Time: "Unix time" (seconds), else "Time" (``YYYY-MM-DD HH:MM:SS``, local). Power:
    "Power (W)", else "Voltage (V)" x "Current (A)".
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = {(h or "").strip().lower(): h for h in reader.fieldnames or []}

    def column(*names):
        for n in names:
            if n in header:
                return header[n]
        return None

    t_col, t_text = column("unix time", "timestamp"), column("time")
    p_col, v_col, i_col = column("power (w)", "power"), column("voltage (v)", "voltage"), column("current (a)", "current")
    if not (t_col or t_text) or not (p_col or (v_col and i_col)):
        raise PowerParseError(f"rd-usb CSV: need a time column and Power (W) or Voltage (V) + Current (A); "
                              f"header is {list(header.values())}")
    times, watts, skipped = [], [], 0
    for row in reader:
        try:
            t = float(row[t_col]) if t_col and row.get(t_col) else datetime.strptime(row[t_text].strip(), "%Y-%m-%d %H:%M:%S").timestamp()
            w = float(row[p_col]) if p_col and row.get(p_col) not in (None, "") else float(row[v_col]) * float(row[i_col])
        except (TypeError, ValueError, KeyError):
            skipped += 1
            continue
        if not np.isfinite(w) or w < 0:
            skipped += 1
            continue
        times.append(t)
        watts.append(w)
    order = np.argsort(times, kind="stable")
    return np.asarray(times)[order], np.asarray(watts)[order], skipped


# ---------------------------------------------------------------------------- RAPL and hwmon

def rapl_energy_joules(start_uj: int, end_uj: int, max_range_uj: int) -> float:
    """Energy between two reads of a RAPL ``energy_uj`` counter, across at most one wrap-around."""
    if start_uj < 0 or end_uj < 0 or max_range_uj <= 0:
        raise PowerParseError(f"rapl: impossible counter values {start_uj}, {end_uj}, range {max_range_uj}")
    delta = end_uj - start_uj
    if delta < 0:  # the counter wrapped
        delta += max_range_uj
    return delta / 1e6


def parse_sysfs_int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise PowerParseError(f"{what}: expected an integer, got {text.strip()[:40]!r}") from None


def hwmon_watts(power_uw: str | None = None, in_mv: str | None = None, curr_ma: str | None = None) -> float:
    """Watts from an INA2xx hwmon device: ``power1_input`` (uW), or ``in1_input`` (mV) x ``curr1_input`` (mA)."""
    if power_uw is not None:
        return parse_sysfs_int(power_uw, "hwmon power1_input") / 1e6
    if in_mv is not None and curr_ma is not None:
        return parse_sysfs_int(in_mv, "hwmon in1_input") * parse_sysfs_int(curr_ma, "hwmon curr1_input") / 1e6
    raise PowerParseError("hwmon: need power1_input, or in1_input and curr1_input")


# ---------------------------------------------------------------------------- energy

@dataclass
class Energy:
    joules: float | None  # over the timed window; None = N/A
    mean_watts: float | None
    idle_watts: float | None
    samples: int
    source: str

    def per_inference_mj(self, inferences: int) -> float | None:
        """Millijoules per inference (total, idle included: what the battery pays)."""
        if self.joules is None or inferences <= 0:
            return None
        return 1e3 * self.joules / inferences

    def dynamic_per_inference_mj(self, inferences: int, seconds: float) -> float | None:
        """Millijoules per inference above the idle draw (what the model itself costs)."""
        if self.joules is None or self.idle_watts is None or inferences <= 0:
            return None
        return 1e3 * max(self.joules - self.idle_watts * seconds, 0.0) / inferences


def integrate(times: np.ndarray, watts: np.ndarray, start: float, end: float) -> tuple[float | None, int]:
    """Joules over [start, end] by the trapezoid rule on samples (held flat beyond the first and
    last sample inside the window); (None, n) when fewer than 2 samples fall inside."""
    times, watts = np.asarray(times, float), np.asarray(watts, float)
    inside = (times >= start) & (times <= end)
    n = int(inside.sum())
    if n < 2:
        return None, n
    t, w = times[inside], watts[inside]
    joules = float(np.trapezoid(w, t)) if hasattr(np, "trapezoid") else float(np.trapz(w, t))
    joules += w[0] * (t[0] - start) + w[-1] * (end - t[-1])  # edges of the window
    return joules, n


def window_energy(times, watts, start: float, end: float, idle: tuple[float, float] | None, source: str) -> Energy:
    """Energy over the timed window, with the mean power over the idle window beside it."""
    joules, n = integrate(times, watts, start, end)
    idle_w = None
    if idle is not None:
        idle_j, idle_n = integrate(times, watts, *idle)
        if idle_j is not None and idle[1] > idle[0]:
            idle_w = idle_j / (idle[1] - idle[0])
    mean = joules / (end - start) if joules is not None and end > start else None
    return Energy(joules, mean, idle_w, n, source)
