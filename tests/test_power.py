"""Power-source parsers on real-format sample lines, malformed ones included, and the energy integral."""

import numpy as np
import pytest

from suite.edge.power import integrate, window_energy
from suite.edge.power_sources import PowerParseError
from suite.edge.power_sources.hwmon import hwmon_watts
from suite.edge.power_sources.rapl import rapl_energy_joules
from suite.edge.power_sources.rdusb import parse_rdusb_csv
from suite.edge.power_sources.tegrastats import (parse_tegrastats_line, tegrastats_line_time,
                                                 tegrastats_rails)

# Jetson Nano, JetPack 4.6 (tegrastats --interval 500)
JP4 = ("RAM 2148/3956MB (lfb 2x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [29%@1479,20%@1479,"
       "25%@1479,27%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 PLL@26.5C CPU@29C PMIC@100C GPU@28C AO@36.5C "
       "thermal@28.5C POM_5V_IN 4520/4680 POM_5V_GPU 0/0 POM_5V_CPU 1439/1402")
# Jetson Orin, JetPack 5/6: timestamped, units on every rail
JP5 = ("11-23-2026 10:00:01 RAM 3000/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,0%@729] EMC_FREQ 0%@2133 "
       "GR3D_FREQ 0%@[305] cpu@45.5C soc2@44.2C VDD_IN 5263mW/5263mW VDD_CPU_GPU_CV 725mW/725mW VDD_SOC 1411mW/1411mW")


def test_tegrastats_jetpack4_and_5():
    assert parse_tegrastats_line(JP4) == pytest.approx(4.52)  # instantaneous, not the 4680 average
    assert tegrastats_rails(JP4) == {"POM_5V_IN": 4520.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 1439.0}
    assert parse_tegrastats_line(JP5) == pytest.approx(5.263)
    assert tegrastats_line_time(JP5) is not None and tegrastats_line_time(JP4) is None


def test_tegrastats_malformed_lines():
    with pytest.raises(PowerParseError, match="no power rail"):
        parse_tegrastats_line("RAM 2148/3956MB SWAP 0/1978MB CPU [29%@1479]")  # MB figures are not power
    with pytest.raises(PowerParseError):
        parse_tegrastats_line("POM_5V_IN ???/4680")


RDUSB = """Time,Voltage (V),Current (A),Power (W),Temperature (°C),Data+ (V),Data- (V),Resistance (Ω),Accumulated current (mAh),Accumulated power (mWh),Accumulated time (seconds),Run time,Run time (seconds),Unix time
2026-11-23 10:00:00,5.12,0.612,3.133,31,0.0,0.0,8.4,12,61,30,00:00:30,30,1763892000
2026-11-23 10:00:00,5.11,0.640,3.270,31,0.0,0.0,8.0,12,61,30,00:00:30,30,1763892000.5
2026-11-23 10:00:01,5.11,n/a,,31,0.0,0.0,8.0,12,61,31,00:00:31,31,1763892001
2026-11-23 10:00:01,5.10,0.700,3.570,31,0.0,0.0,7.3,12,62,31,00:00:31,31,1763892001.5
"""


def test_rdusb_csv_by_header_name():
    t, w, skipped = parse_rdusb_csv(RDUSB)
    assert skipped == 1  # the row with no power and a garbled current
    assert list(w) == [3.133, 3.27, 3.57] and t[0] == 1763892000
    # Columns in another order and no Power column: V x A, time from the text column
    alt = "Current (A),Voltage (V),Time\n0.5,5.0,2026-11-23 10:00:00\n0.6,5.0,2026-11-23 10:00:01\n"
    t, w, skipped = parse_rdusb_csv(alt)
    assert list(w) == [2.5, 3.0] and t[1] - t[0] == 1 and skipped == 0
    with pytest.raises(PowerParseError, match="header is"):
        parse_rdusb_csv("a,b\n1,2\n")


def test_rapl_wraps_and_hwmon_units():
    assert rapl_energy_joules(1_000_000, 3_500_000, 262_143_328_850) == pytest.approx(2.5)
    assert rapl_energy_joules(262_143_000_000, 1_000_000, 262_143_328_850) == pytest.approx(1.32885)  # wrapped once
    with pytest.raises(PowerParseError):
        rapl_energy_joules(-1, 5, 10)
    assert hwmon_watts(power_uw="4520000\n") == pytest.approx(4.52)
    assert hwmon_watts(in_mv="5100", curr_ma="800") == pytest.approx(4.08)
    with pytest.raises(PowerParseError, match="in1_input"):
        hwmon_watts(in_mv="5.1V", curr_ma="800")


def test_energy_integral_and_idle():
    t = np.arange(0, 10.5, 0.5)
    w = np.where(t < 4, 2.0, 5.0)  # idle 2 W for 4 s, then 5 W while timing
    joules, n = integrate(t, w, 5.0, 9.0)
    assert joules == pytest.approx(20.0) and n == 9
    e = window_energy(t, w, 5.0, 9.0, idle=(0.0, 3.5), source="test")
    assert e.idle_watts == pytest.approx(2.0) and e.mean_watts == pytest.approx(5.0)
    assert e.dynamic_per_inference_mj(1000, 4.0) == pytest.approx(12.0)
    none = window_energy(t, w, 20.0, 30.0, idle=None, source="test")  # no samples in the window: N/A
    assert none.joules is None and none.dynamic_per_inference_mj(100, 4.0) is None


def _raw(readings, kind):
    from suite.timing import summarize

    """A runner result: 2 s idle, then one 2 s timed window of 100 inferences for one model."""
    return {"runtime": "torch", "runtime_version": "x", "threads": 1, "idle_window": [0.0, 2.0],
            "models": {"m": summarize([[1.0] * 100])},  # what the runner's timing protocol returns
            "windows": [{"model": "m", "round": 0, "start": 3.0, "end": 5.0, "inferences": 100}],
            "power": {"kind": kind, "error": None, "readings": readings}}


def test_board_results_to_energy_per_inference():
    from suite.edge.bench import summarize
    from suite.edge.boards import BoardConfig

    # tegrastats: 2 W idle, 4.52 W while timing (JetPack 4 lines, sampled every 0.5 s)
    lines = [(t / 2, JP4.replace("4520/4680", ("2000/2000" if t / 2 < 2.5 else "4520/4680"))) for t in range(0, 13)]
    lines.insert(3, (1.4, "tegrastats: garbled"))
    board = BoardConfig(name="nano", host="h", user="u", kind="jetson-nano", power={"kind": "tegrastats"})
    row = summarize(_raw(lines, "tegrastats"), board)[0]
    assert row["energy_mj"] == pytest.approx(1e3 * 4.52 * 2 / 100)
    assert row["idle_watts"] == pytest.approx(2.0) and row["dynamic_energy_mj"] == pytest.approx(1e3 * 2.52 * 2 / 100)

    # RAPL: a counter rising 3 J/s, wrapping once inside the window
    rng = 10_000_000
    reads = [(t / 2, {"energy_uj": str(int(1.5e6 * t + 5_000_000) % rng), "max_energy_range_uj": str(rng)}) for t in range(0, 13)]
    board = BoardConfig(name="x86", host="h", user="u", power={"kind": "rapl"})
    row = summarize(_raw(reads, "rapl"), board)[0]
    assert row["mean_watts"] == pytest.approx(3.0) and row["energy_mj"] == pytest.approx(60.0)

    board = BoardConfig(name="plain", host="h", user="u")  # no power source: N/A, never a number
    row = summarize(_raw([], "none"), board)[0]
    assert row["energy_mj"] is None and row["energy_note"] == "N/A: no power source configured"
    assert row["latency_p50_ms"] == 1.0 and row["inferences"] == 100


def test_board_results_make_the_table():
    """edge_results.json rows become each method's board cells: speed-up over the baseline, SLO met."""
    from suite.timing import P50
    from suite.report.tables import build

    base = {"board": "pi4", "model": "baseline", P50: 2.0, "latency_p90_ms": 2.5, "energy_mj": None, "energy_note": "N/A"}
    new = {**base, "model": "caenet", P50: 0.5}
    report = build({"baseline": {"test_acc": 0.9}, "caenet": {"test_acc": 0.9}}, [{"rows": [base, new]}], slo_ms=1.0)
    cells = {row["method"]: row["boards"]["pi4"] for row in report["rows"]}
    assert cells["caenet"]["speedup"] == 4.0 and cells["baseline"]["meets_slo"] is False and cells["caenet"]["meets_slo"] is True
