#!/usr/bin/env python3
"""The results tables of README.md and docs/, rendered from docs/results/*.json.

    .venv/bin/python scripts/results_tables.py           # rewrite the block between the markers
    .venv/bin/python scripts/results_tables.py --check   # exit 1 when a block differs from the JSON

Each ``docs/results/<name>.summary.json`` is the ``summary.json`` of a full run of a shipped
config, written by ``caenet run configs/<name>.yaml --summary docs/results/<name>.summary.json``.
Their table sits between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in
docs/results.md (``TARGETS``), and the strong-scaling table of ``scaling_workers.smoke.json`` between
``<!-- scaling:begin -->`` and ``<!-- scaling:end -->``, Tables I and II of
``compare_<config>.json`` (written by ``caenet compare ... --seeds 0 1 2 --publish docs/results``)
in docs/results.md and their headline rows in the README (``BLOCKS``);
each study's table (``study_<name>.json``, written by ``caenet study configs/studies/<name>.yaml
--publish docs/results``) in docs/ablation.md, and each sweep's (``sweep_<name>.json``, from
``caenet sweep ... --publish docs/results``) in docs/results.md. ``tests/test_results_tables.py`` fails when a file's
block and the JSON disagree. The cells are formatted by the suite's own report code (a gap, a
speed-up, the headline, a study's table), so a table here reads as the run printed it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from suite.report.intervals import gap_text, headline_line, interval_text, pair_line
from suite.study.table import markdown as study_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
TARGETS = (REPO / "docs" / "results.md",)
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


def _latency(cell: dict | None, first: bool, method: str = "") -> tuple[str, str]:
    """(p50 [95%], speed-up [95%]) of one board's cell (a reference row's speed-up: 1x)."""
    if not cell:
        return NA, NA
    p50 = interval_text(cell["latency_p50_ms"], cell.get("latency_p50_ms_lo"), cell.get("latency_p50_ms_hi"))
    if first or cell.get("reference") == method:
        return p50, "1x"
    if cell.get("speedup") is None:
        return p50, NA
    return p50, interval_text(cell["speedup"], cell.get("speedup_lo"), cell.get("speedup_hi"), "x")


def sizes_line(report: dict) -> str:
    """What a table's numbers stand on: the images of each split, beside the real dataset's."""
    full = FULL_SIZES.get(report.get("dataset"))
    seeds = f"{len(report['seeds'])} seeds ({', '.join(map(str, report['seeds']))})"
    if "train_images" in report:
        line = (f"{seeds}; training / validation / test images: {report['train_images']:,} / {report['val_images']:,} / "
                f"{report['test_images']:,}")
        if full:
            n = report["train_images"] + report["val_images"]
            line += (f" (the real {full[0]}: {full[1]:,} / {full[2]:,}; these are {n:,} of its training images, "
                     f"{100 * n / full[1]:.0f}%, {100 * report['val_images'] / n:.0f}% of them held out for validation)")
    else:  # a report from before the split sizes were recorded
        line = f"{seeds} on {report['test_images']:,} test images"
    return line + f"; batch-1 p50 on {report['threads']} thread(s) of an x86 CPU (`{report['host']}`), not a board."


def paper_line(config: str, folder: Path = RESULTS) -> str:
    """The paper's own figures for a table (``paper.json``, hand-copied with its source)."""
    if not (folder / "paper.json").exists():
        return ""
    paper = json.loads((folder / "paper.json").read_text())
    p = paper.get(config)
    if not p:
        return ""
    speed = ", ".join(f"{v:g}x on a {k}" for k, v in p["speedup"].items())
    return (f"The paper (full dataset, boards): {p['baseline']} {100 * p['baseline_acc']:.2f}% ({p['baseline_size_mb']:g} MB), "
            f"CAE-Net {100 * p['caenet_acc']:.2f}% ({p['caenet_size_mb']:g} MB), {speed}; {paper['source'].split(':')[0]}.")


def render_compare(config: str, folder: Path = RESULTS) -> str:
    """Table I or II: ``compare_<config>.json``, the report of ``caenet compare configs/<config>.yaml
    --seeds 0 1 2 --publish docs/results``: accuracy mean ± std over the seeds, the paired gap to
    the baseline with its 95% interval and verdict, size, and each board's batch-1 p50 and
    speed-up with their 95% intervals (``this-cpu``: PyTorch here), each speed-up against the
    baseline at the row's precision; under it the sizes, the like-for-like pairs, the fastest
    model at parity per board and the paper's figures."""
    if not (folder / f"compare_{config}.json").exists():
        return (f"Not published: `compare_{config}.json` is withdrawn until `caenet compare configs/{config}.yaml --seeds 0 1 2 "
                "--boards BOARDS.yaml --publish docs/results` runs again (CHANGELOG.md, 2026-12-08, says why).")
    report = json.loads((folder / f"compare_{config}.json").read_text())
    boards = report.get("boards") or ["this-cpu"]
    head = "| Method | Precision | Accuracy (mean ± std) | vs baseline, pts [95%] | Params (non-zero) | Size |"
    for b in boards:
        head += f" {b} p50 ms [95%] | {b} speed-up [95%] |"
    lines = [head, "|---" * (6 + 2 * len(boards)) + "|"]
    for i, row in enumerate(report["rows"]):
        std = row.get("test_acc_std")
        cells = [row["method"] + (" (did not converge)" if "convergence" in row else ""), row.get("precision", NA),
                 f"{100 * row['test_acc']:.2f}{f' ± {100 * std:.2f}' if std is not None else ''}%",
                 "-" if i == 0 else gap_text(row), f"{_count(row['parameters'])} ({_count(row['nonzero_parameters'])})",
                 _bytes(row["size_bytes"])]
        for b in boards:
            cells += _latency(row["boards"].get(b), i == 0, row["method"])
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("size_and_latency"):
        lines += ["", "Size and latency only: built from the registry and not trained here (2 CPU cores cannot train "
                  "them to a result worth an accuracy column; dense latency does not depend on the weights' values)", "",
                  "| Network | Params (non-zero) | Size |" + "".join(f" {b} p50 ms [95%] | {b} speed-up [95%] |" for b in boards),
                  "|---" * (3 + 2 * len(boards)) + "|"]
        for row in report["size_and_latency"]:
            cells = [row["method"], f"{_count(row['parameters'])} ({_count(row['nonzero_parameters'])})", _bytes(row["size_bytes"])]
            for b in boards:
                cells += _latency(row["boards"].get(b), False)
            lines.append("| " + " | ".join(cells) + " |")
    references = sorted({c["reference"] for r in report["rows"] for c in r["boards"].values() if c.get("reference")})
    lines += ["", sizes_line(report),
              "Each speed-up is against the baseline at the row's precision, on the same runtime, from alternating "
              f"windows ({' and '.join(f'`{r}`' for r in references) or 'the baseline'}); `this-cpu` is eager PyTorch "
              "(int8: TorchScript), `onnxruntime` the exported ONNX (int8: onnxruntime's own static quantization).",
              "", "CAE-Net against the baseline, like for like:"]
    lines += [f"- {pair_line(p)}" for p in report.get("pairs") or []] or ["- n/a (no CAE-Net row)"]
    lines += ["", "The fastest model whose accuracy interval reaches the baseline's, per board:"]
    for b in boards:
        h = (report.get("headlines") or {}).get(b, report.get("headline") if b == boards[0] else None)
        lines.append(f"- {b}: " + headline_line(h, report["rows"][0]["method"], b))
    paper = paper_line(config, folder)
    lines += ["", paper] if paper else []
    # once each: compare_mnist_lenet.json was written while the board's N/A reasons repeated per pass
    lines += [""] + [f"- {note}" for note in dict.fromkeys(report.get("notes") or [])] if report.get("notes") else []
    return "\n".join(lines)


def render_headlines(folder: Path = RESULTS) -> str:
    """The README's headline: per dataset, the shipped CAE-Net against the baseline on each
    runtime at each precision and on its fastest form here, what the numbers stand on, and the
    paper's figures."""
    lines = []
    for config, title in COMPARES:
        if not (folder / f"compare_{config}.json").exists():
            lines += [f"**{title}**: withdrawn until it is re-run like for like against a converged baseline "
                      "([CHANGELOG.md](CHANGELOG.md), 2026-12-08).", ""]
            continue
        report = json.loads((folder / f"compare_{config}.json").read_text())
        base = report["rows"][0]
        short = [r["method"] for r in report["rows"] if "convergence" in r]
        lines.append(f"**{title}** (`configs/{config}.yaml`; {sizes_line(report)})")
        lines += [f"- {pair_line(p)}" for p in report.get("pairs") or []]
        lines.append(f"- Baseline {base['method']}: " + ("**did not converge**" if "convergence" in base else
                                                         "converged (validation accuracy stopped rising) at every seed")
                     + (f"; rows still short of convergence, marked in the table: {', '.join(short)}" if short else "") + ".")
        if paper := paper_line(config, folder):
            lines.append(f"- {paper}")
        lines.append("")
    return "\n".join(lines).strip("\n")


FULL_SIZES = {"cifar10": ("CIFAR-10", 50000, 10000), "mnist": ("MNIST", 60000, 10000)}
COMPARES = (("cifar10_alexnet", "CIFAR-10 subset (Table I)"), ("mnist_lenet", "MNIST (Table II)"))
STUDIES = ("mnist", "cifar10", "cifar10-defaults")  # docs/results/study_<name>.json -> docs/ablation.md
SWEEPS = ("cifar10-clusters-pruning",)  # docs/results/sweep_<name>.json -> docs/results.md


def render_sweep(name: str, folder: Path = RESULTS) -> str:
    """A sweep's table as ``caenet sweep`` printed it, from ``sweep_<name>.json``."""
    return json.loads((folder / f"sweep_{name}.json").read_text())["table"].strip("\n")


def render_study(name: str, folder: Path = RESULTS) -> str:
    """A study's table as ``caenet study`` wrote it (``study.md``), from ``study_<name>.json``."""
    return study_table(json.loads((folder / f"study_{name}.json").read_text()))

# block name -> (its table from docs/results/, the files that hold it between its markers)
BLOCKS = {"results": (lambda: render(load()), TARGETS),
          "scaling": (render_scaling, (REPO / "README.md", REPO / "docs" / "performance.md")),
          "headline": (render_headlines, (REPO / "README.md",)),
          **{f"compare_{config}": (lambda config=config: render_compare(config), (REPO / "docs" / "results.md",))
             for config, _ in COMPARES},
          **{f"study_{name}": (lambda name=name: render_study(name), (REPO / "docs" / "ablation.md",)) for name in STUDIES},
          **{f"sweep_{name}": (lambda name=name: render_sweep(name), (REPO / "docs" / "results.md",)) for name in SWEEPS}}


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
