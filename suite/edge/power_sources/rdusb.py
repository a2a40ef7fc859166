"""rd-usb: a UM34C/UM24C/UM25C USB meter logged by rd-usb on the controller (the paper's Pi 4 set-up).

Nothing runs on the board: after the run, the CSV that rd-usb exported on this machine is
read, and the timed windows are cut from it by wall clock (board and controller clocks must
agree, e.g. NTP). Samples come about twice a second, so timed windows should last a minute
or more.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

import numpy as np

from . import PowerParseError, PowerSource, PowerUnavailable, register


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


@register
class RdUsb(PowerSource):
    kind = "rd-usb"
    csv: str | None = None  # the CSV export on the controller, read after the run

    def check(self):
        if not self.csv:
            raise ValueError("rd-usb needs csv: the path of rd-usb's CSV export on this machine")

    def samples(self, readings):
        path = Path(self.csv).expanduser()
        if not path.is_file():
            raise PowerUnavailable(f"rd-usb: {path} not found (export the meter's session as CSV there)")
        times, watts, _ = parse_rdusb_csv(path.read_text(errors="replace"))
        return times, watts
