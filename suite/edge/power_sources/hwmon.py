"""hwmon: INA2xx/INA3221 current sensors under ``/sys/class/hwmon`` on the board.

``power1_input`` is microwatts; without it, ``in1_input`` mV x ``curr1_input`` mA.
"""

from __future__ import annotations

import glob

from . import Polled, PowerParseError, PowerUnavailable, parse_sysfs_int, read, register


def hwmon_watts(power_uw: str | None = None, in_mv: str | None = None, curr_ma: str | None = None) -> float:
    """Watts from an INA2xx hwmon device: ``power1_input`` (uW), or ``in1_input`` (mV) x ``curr1_input`` (mA)."""
    if power_uw is not None:
        return parse_sysfs_int(power_uw, "hwmon power1_input") / 1e6
    if in_mv is not None and curr_ma is not None:
        return parse_sysfs_int(in_mv, "hwmon in1_input") * parse_sysfs_int(curr_ma, "hwmon curr1_input") / 1e6
    raise PowerParseError("hwmon: need power1_input, or in1_input and curr1_input")


@register
class Hwmon(Polled):
    kind = "hwmon"
    hwmon: str | None = None  # hwmon folder on the board; null: the first ina2xx/ina3221 found

    def _folder(self) -> str | None:
        if self.hwmon:
            return self.hwmon
        for d in sorted(glob.glob("/sys/class/hwmon/hwmon*")):
            if (read(d + "/name") or "").startswith("ina"):
                return d
        return None

    def sample(self, stop):
        d = self._folder()
        if d is None:
            raise PowerUnavailable("no ina2xx/ina3221 device under /sys/class/hwmon")
        for _ in self.ticks(stop):
            yield {"power_uw": read(d + "/power1_input"), "in_mv": read(d + "/in1_input"), "curr_ma": read(d + "/curr1_input")}

    def watts(self, r: dict) -> float:
        return hwmon_watts(r.get("power_uw"), r.get("in_mv"), r.get("curr_ma"))
