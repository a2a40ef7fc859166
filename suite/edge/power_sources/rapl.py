"""rapl: Linux powercap counters (``/sys/class/powercap/intel-rapl:N/energy_uj``) on x86 boards.

The counter is cumulative microjoules that wraps at ``max_energy_range_uj``; power is the
energy between consecutive reads over their interval.
"""

from __future__ import annotations

from . import Polled, PowerParseError, PowerUnavailable, parse_sysfs_int, read, register


def rapl_energy_joules(start_uj: int, end_uj: int, max_range_uj: int) -> float:
    """Energy between two reads of a RAPL ``energy_uj`` counter, across at most one wrap-around."""
    if start_uj < 0 or end_uj < 0 or max_range_uj <= 0:
        raise PowerParseError(f"rapl: impossible counter values {start_uj}, {end_uj}, range {max_range_uj}")
    delta = end_uj - start_uj
    if delta < 0:  # the counter wrapped
        delta += max_range_uj
    return delta / 1e6


@register
class Rapl(Polled):
    kind = "rapl"
    rapl: str = "/sys/class/powercap/intel-rapl:0"  # RAPL domain folder on the board

    def sample(self, stop):
        max_range = read(self.rapl + "/max_energy_range_uj")
        if read(self.rapl + "/energy_uj") is None:
            raise PowerUnavailable(f"{self.rapl}/energy_uj is not readable (permissions or no RAPL)")
        for _ in self.ticks(stop):
            yield {"energy_uj": read(self.rapl + "/energy_uj"), "max_energy_range_uj": max_range}

    def samples(self, readings):
        """Mean power between consecutive reads, stamped at their midpoint."""
        times, watts, prev = [], [], None
        for ts, r in readings:
            try:
                e = parse_sysfs_int(r["energy_uj"] or "", "rapl energy_uj")
                rng = parse_sysfs_int(r["max_energy_range_uj"] or "", "rapl max_energy_range_uj")
            except PowerParseError:
                continue
            if prev is not None and ts > prev[0]:
                times.append((ts + prev[0]) / 2)
                watts.append(rapl_energy_joules(prev[1], e, rng) / (ts - prev[0]))
            prev = (ts, e)
        return times, watts
