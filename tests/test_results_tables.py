"""The README's headline results table is docs/results/*.json, rendered by scripts/results_tables.py
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
