#!/usr/bin/env python3
"""The headline results table of README.md and docs/results.md, rendered from docs/results/*.json.

    .venv/bin/python scripts/results_tables.py           # rewrite the block between the markers
    .venv/bin/python scripts/results_tables.py --check   # exit 1 when a block differs from the JSON

Each ``docs/results/<name>.summary.json`` is the ``summary.json`` of a full run of a shipped
config, written by ``caenet run configs/<name>.yaml --summary docs/results/<name>.summary.json``.
The table sits between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in each file of
``TARGETS``, and the strong-scaling table of ``scaling_workers.smoke.json`` between
``<!-- scaling:begin -->`` and ``<!-- scaling:end -->`` (``BLOCKS``);
``tests/test_results_tables.py`` fails when a file's block and the JSON disagree.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
TARGETS = (REPO / "README.md", REPO / "docs" / "results.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
NA = "n/a"


def load(folder: Path = RESULTS) -> list[dict]:
    """Every ``*.summary.json`` of ``folder``, in file-name order."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.summary.json"))]


def _pct(v) -> str:
    return NA if v is None else f"{100 * v:.2f}%"


def _scaled(n, units: tuple[str, str, str], below: str) -> str:
    """``n`` in thousands, millions or billions (``units``), three digits; ``below`` under 1000."""
    if n is None:
        return NA
    for size, unit in zip((1e9, 1e6, 1e3), units):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return below.format(n)


def _count(n) -> str:
    return _scaled(n, ("G", "M", "K"), "{}")


def _bytes(n) -> str:
    return _scaled(n, (" GB", " MB", " KB"), "{} B")


def _pair(a: str, b: str, sep: str = " → ") -> str:
    return NA if NA in (a, b) else f"{a}{sep}{b}"


def _ms(v) -> str:
    return NA if v is None else f"{v:.3g} ms"


def _g2(v) -> str:
    return NA if v is None else f"{v:.2g}"


def _no_kd(s: dict) -> str:
    acc = (s.get("accuracy_transfer") or {}).get("no_kd")
    if acc is not None:
        return _pct(acc)
    if (s.get("caenet_kd") or {}).get("alpha") == 0:
        return "the run's CAE-Net (its KD is off)"
    return NA


def _kd(s: dict) -> str:
    kd = s.get("caenet_kd") or {}
    if not kd:
        return NA
    if kd.get("alpha") == 0:
        return "off (labels only)"
    return f"T {kd['temperature']:g}, alpha {kd['alpha']:g}"


ROWS = (  # (label, value of one summary)
    ("dataset", lambda s: s.get("dataset", NA)),
    ("baseline test accuracy", lambda s: _pct(s["baseline"].get("test_acc"))),
    ("CAE-Net test accuracy", lambda s: f"**{_pct(s['caenet'].get('test_acc'))}**"),
    ("CAE-Net without KD", _no_kd),
    ("the same network from scratch (no transfer)", lambda s: _pct((s.get("accuracy_transfer") or {}).get("no_transfer"))),
    ("CAE-Net's KD", _kd),
    ("batch-1 p50 latency, baseline → CAE-Net",
     lambda s: _pair(_ms(s["baseline"].get("latency_p50_ms")), _ms(s["caenet"].get("latency_p50_ms")))),
    ("speed-up (p50)", lambda s: NA if s.get("speedup_p50") is None else f"**{s['speedup_p50']:.3g}x**"),
    ("parameters, baseline → CAE-Net",
     lambda s: _pair(_count(s["baseline"].get("parameters")), _count(s["caenet"].get("parameters")))),
    ("model file, baseline → CAE-Net",
     lambda s: _pair(_bytes(s["baseline"].get("size_bytes")), _bytes(s["caenet"].get("size_bytes")))),
    ("CAE val MSE, class-cluster vs one target per class",
     lambda s: _pair(_g2((s.get("reconstruction_mse") or {}).get("clustered")),
                     _g2((s.get("reconstruction_mse") or {}).get("unclustered")), " vs ")),
    ("clusters per class (elbow, mean)", lambda s: _g2(s.get("clusters_per_class_mean"))),
)


def render(summaries: list[dict]) -> str:
    """The Markdown table: one column per run, one row per headline number."""
    if not summaries:
        raise ValueError(f"no *.summary.json under {RESULTS}")
    head = "| | " + " | ".join(f"`configs/{s.get('config', '?')}.yaml`" for s in summaries) + " |"
    lines = [head, "|---" * (len(summaries) + 1) + "|"]
    for label, value in ROWS:
        lines.append(f"| {label} | " + " | ".join(value(s) for s in summaries) + " |")
    return "\n".join(lines)


def render_scaling(folder: Path = RESULTS) -> str:
    """The strong-scaling table of ``scaling_workers.smoke.json`` (a ``timing: fresh`` study's
    ``study.json`` timing view, written by ``caenet study configs/studies/scaling_workers.yaml --smoke``)."""
    timing = json.loads((folder / "scaling_workers.smoke.json").read_text())["timing"]
    lines = ["| workers | CPUs per training | wall s per cell | CAE img/s | speed-up | efficiency |", "|---|---|---|---|---|---|"]
    for v in timing["variants"]:
        lines.append(f"| {v['workers']} | {v['cpus_per_training']:g} | {v['wall_s_mean']:.1f} | "
                     f"{v['images_per_second'].get('autoencoder', 0):.0f} | {v['speedup']:.2f}x | {v['efficiency']:.2f} |")
    return "\n".join(lines)


# block name -> (its table from docs/results/, the files that hold it between its markers)
BLOCKS = {"results": (lambda: render(load()), TARGETS),
          "scaling": (render_scaling, (REPO / "README.md", REPO / "docs" / "performance.md"))}


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def block(text: str, name: str = "results") -> str:
    """What ``text`` holds between the markers of block ``name`` (stripped); ValueError when they are missing."""
    begin, end_marker = _markers(name)
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"no {begin} ... {end_marker} block")
    return text[start + len(begin):end].strip("\n")


def splice(text: str, table: str, name: str = "results") -> str:
    """``text`` with the block ``name`` between its markers replaced by ``table``."""
    block(text, name)  # the markers are there
    begin, end_marker = _markers(name)
    start, end = text.find(begin) + len(begin), text.find(end_marker)
    return text[:start] + "\n" + table + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file's block differs")
    args = parser.parse_args(argv)
    stale = []
    for name, (make, targets) in BLOCKS.items():
        table = make()
        for target in TARGETS if name == "results" else targets:  # TARGETS: patched by the tests
            text = target.read_text()
            if block(text, name) == table:
                continue
            if args.check:
                stale.append(f"{target.relative_to(REPO)} ({name})")
            else:
                target.write_text(splice(text, table, name))
                print(f"updated {target.relative_to(REPO)} ({name})")
    if stale:
        print(f"results table differs from docs/results/*.json in: {', '.join(map(str, stale))}; "
              "run scripts/results_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
