"""The results tables of the README and docs/ are docs/results/*.json, rendered by scripts/results_tables.py
(issue 34: one source for every number). No Ray, no subprocess."""

from __future__ import annotations

import copy
import json
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("results_tables", REPO / "scripts" / "results_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _generator()


@pytest.mark.parametrize("target", tables.TARGETS, ids=lambda p: p.name)
def test_results_block_is_the_json(target):
    """The block between the markers is what the JSON renders to: a hand edit of the table, or a
    new run's JSON without `scripts/results_tables.py`, fails here."""
    assert tables.block(target.read_text()) == tables.render(tables.load()), (
        f"{target.relative_to(REPO)}: its results table differs from docs/results/*.json; "
        "run .venv/bin/python scripts/results_tables.py")


def test_the_table_shows_each_runs_numbers():
    """Each run's headline numbers, as its JSON holds them, are in the table (so the check above
    compares numbers, not an empty block)."""
    summaries = tables.load()
    assert {s["config"] for s in summaries} >= {"cifar10_alexnet", "mnist_lenet"}
    table = tables.render(summaries)
    for s in summaries:
        assert f"`configs/{s['config']}.yaml`" in table
        assert f"{100 * s['caenet']['test_acc']:.2f}%" in table
        assert f"{100 * s['baseline']['test_acc']:.2f}%" in table
        assert f"{s['speedup_p50']:.3g}x" in table


def test_a_changed_number_changes_the_table_and_the_check_fails(tmp_path, monkeypatch):
    """A measurement that changes in the JSON changes the rendered table, and --check then exits
    1 without writing; without --check the block is rewritten and the rest of the file kept."""
    summaries = tables.load()
    changed = copy.deepcopy(summaries)
    changed[0]["caenet"]["test_acc"] = 0.1234
    assert tables.render(changed) != tables.render(summaries) and "12.34%" in tables.render(changed)

    page = tmp_path / "page.md"
    page.write_text(f"# title\n\n{tables.BEGIN}\n| stale |\n{tables.END}\n\ntext after\n")
    monkeypatch.setattr(tables, "TARGETS", (page,))
    monkeypatch.setattr(tables, "REPO", tmp_path)
    assert tables.main(["--check"]) == 1
    assert "| stale |" in page.read_text()
    assert tables.main([]) == 0
    assert tables.block(page.read_text()) == tables.render(summaries)
    assert page.read_text().startswith("# title\n\n") and page.read_text().endswith("\n\ntext after\n")
    assert tables.main(["--check"]) == 0


def test_a_page_without_markers_is_an_error():
    with pytest.raises(ValueError, match="results:begin"):
        tables.block("no markers here")


@pytest.mark.parametrize("target", tables.BLOCKS["scaling"][1], ids=lambda p: p.name)
def test_scaling_block_is_the_json(target):
    """The strong-scaling table (issue 26) in the README and docs/performance.md is
    docs/results/scaling_workers.smoke.json, each row's speed-up as measured."""
    table = tables.render_scaling()
    assert tables.block(target.read_text(), "scaling") == table
    timing = json.loads((REPO / "docs" / "results" / "scaling_workers.smoke.json").read_text())["timing"]
    assert [v["workers"] for v in timing["variants"]] == [1, 2, 4, 8]
    assert all(f"{v['speedup']:.2f}x" in table for v in timing["variants"])


@pytest.mark.parametrize("name,target", [(name, target) for name, (_, targets) in tables.BLOCKS.items() if name != "results"
                                         for target in targets], ids=lambda v: getattr(v, "name", v))
def test_every_block_is_its_json(name, target):
    """Every generated block (issue 28: Tables I/II and the README's headline from the runs of
    `caenet compare --seeds 0 1 2 --publish docs/results`) is what its JSON renders to."""
    assert tables.block(target.read_text(), name) == tables.BLOCKS[name][0](), (
        f"{target.relative_to(REPO)} ({name}): differs from docs/results/; run .venv/bin/python scripts/results_tables.py")


def test_a_compare_table_carries_each_rows_intervals(tmp_path):
    """Table I/II rows: mean ± std, the paired gap with its interval and verdict, the p50 and
    speed-up intervals, the headline sentence (a report of two rows whose numbers are known)."""
    cell = {"latency_p50_ms": 6.0, "latency_p50_ms_lo": 5.9, "latency_p50_ms_hi": 6.1}
    rows = [{"method": "alexnet (baseline)", "precision": "fp32", "test_acc": 0.5851, "test_acc_std": 0.008, "parameters": 9_350_000,
             "nonzero_parameters": 9_350_000, "size_bytes": 37_400_000, "boards": {"this-cpu": cell}},
            {"method": "CAE-Net-int8", "precision": "int8", "test_acc": 0.5802, "test_acc_std": 0.011, "gap": -0.0049, "gap_lo": -0.021,
             "gap_hi": 0.0112, "verdict": "no difference at these seeds", "parameters": 1_240_000, "nonzero_parameters": 1_240_000,
             "size_bytes": 1_270_000, "boards": {"this-cpu": {"latency_p50_ms": 0.2, "latency_p50_ms_lo": 0.19,
                                                               "latency_p50_ms_hi": 0.21, "speedup": 30.1, "speedup_lo": 28.2,
                                                               "speedup_hi": 32.0}}}]
    head = {"method": "CAE-Net-int8", "board": "this-cpu", "latency_p50_ms": 0.2, "test_acc_lo": 0.56, "test_acc_hi": 0.60, "baseline_acc_lo": 0.57, "baseline_acc_hi": 0.60,
            "speedup": 30.1, "speedup_lo": 28.2, "speedup_hi": 32.0, **{k: rows[1][k] for k in ("gap", "gap_lo", "gap_hi", "verdict")}}
    (tmp_path / "compare_x.json").write_text(json.dumps({"rows": rows, "headline": head, "seeds": [0, 1, 2], "test_images": 1017,
                                                         "threads": 1, "host": "h", "notes": ["a note"],
                                                         "boards": ["this-cpu"]}))
    table = tables.render_compare("x", tmp_path)
    assert "| CAE-Net-int8 | int8 | 58.02 ± 1.10% | -0.49 [-2.10, +1.12] no difference at these seeds | 1.24M (1.24M) | 1.27 MB | " \
           "0.2 [0.19, 0.21] | 30.1x [28.2, 32] |" in table
    assert "| alexnet (baseline) | fp32 | 58.51 ± 0.80% | - | 9.35M (9.35M) | 37.4 MB | 6 [5.9, 6.1] | 1x |" in table
    assert "**30.1x [28.2, 32]** faster on this-cpu" in table and "-0.49 points [-2.10, +1.12]: no difference" in table and "- a note" in table and "3 seeds (0, 1, 2) on 1,017 test images" in table
