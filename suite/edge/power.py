"""Energy per inference from power samples.

Each power source (``suite.edge.power_sources``, one module per ``power.kind``) turns what a
board or a USB meter exposes into ``(t seconds, watts)`` samples; ``energy`` integrates them
over the timed window. Without a power source energy is N/A, never estimated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Energy:
    joules: float | None  # over the timed window; None = N/A
    mean_watts: float | None
    idle_watts: float | None
    samples: int
    source: str

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
