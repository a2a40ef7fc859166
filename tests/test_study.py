"""`caenet study` and the ablation switches it turns: target modes, skips, encoder modes, heads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from suite.config import ExperimentConfig
from suite.models import create_model
from suite.stages import targets
from suite.study.study_file import load_study
from suite.study.table import aggregate, markdown, plot
from suite.training.loop import make_optimizer

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- the switches


def test_target_modes_pick_from_the_right_images():
    labels = np.array([0, 0, 0, 1, 1, 1, 0])
    split = np.array(["train", "train", "val", "train", "train", "val", "train"])
    entropy = np.array([0.5, 0.1, 0.0, 0.9, 0.2, 0.0, 0.3])  # the easiest training images: 1 (class 0), 4 (class 1)
    table = pa.table({"label": labels, "split": split, "entropy": entropy, "target_index": [1, 1, 1, 4, 4, 4, 6]})
    assert targets.for_mode(table, "cluster", 0).tolist() == [1, 1, 1, 4, 4, 4, 6]
    assert targets.for_mode(table, "class", 0).tolist() == [1, 1, 1, 4, 4, 4, 1]
    assert targets.for_mode(table, "self", 0).tolist() == list(range(7))
    rand = targets.for_mode(table, "random", 3)
    assert all(labels[t] == labels[i] and split[t] == "train" for i, t in enumerate(rand))  # own class, training images only
    assert rand.tolist() == targets.for_mode(table, "random", 3).tolist()  # fixed by the seed
    many = [targets.random_of_class(np.zeros(200, int), np.ones(200, bool), s) for s in range(2)]
    assert (many[0] != many[1]).any() and len(np.unique(many[0])) > 50  # random, not one image


def test_cae_without_skips_and_the_authors_head():
    x = torch.rand(2, 1, 28, 28)
    with_skips, without = create_model("cae", in_channels=1, image_size=28), create_model("cae", in_channels=1, image_size=28, skips=False)
    assert with_skips(x).shape == without(x).shape == x.shape
    assert sum(p.numel() for p in without.parameters()) < sum(p.numel() for p in with_skips.parameters())
    # the decoder of the skip-free CAE sees only the code: changing an early encoder block's
    # output (not the code) cannot change the result
    head = create_model("caenet", in_channels=1, image_size=28, head="conv", filters=6)
    assert head(x).shape == (2, 10)
    assert isinstance(head.classifier[0], torch.nn.Conv2d) and head.classifier[0].out_channels == 6
    assert head.encoder.state_dict().keys() == with_skips.encoder.state_dict().keys()  # the CAE's encoder loads into it
    with pytest.raises(ValueError, match="unknown CAE-Net head"):
        create_model("caenet", head="mlp")


def test_finetuned_encoder_learns_at_its_own_rate():
    from suite.config import TrainConfig
    from suite.training.fit import _param_groups

    model = create_model("caenet", in_channels=1, image_size=28)
    groups = _param_groups(model, {"encoder": 0.1}, 0.01)
    assert [g["lr"] for g in groups] == [0.001, 0.01]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt, sched = make_optimizer(groups, TrainConfig(epochs=1, optimizer="adam", lr=0.01), steps=10)
    for _ in range(3):  # one-cycle: each group peaks at its own rate
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(opt.param_groups[1]["lr"] / 10)


def test_default_configs_keep_their_cache_keys():
    """The new switches enter a stage's key only when changed: caches of earlier runs stay valid."""
    from suite.stages import autoencoder, caenet

    class Ctx:  # what model_spec reads
        def __init__(self, cfg):
            from suite.data import INFO

            self.cfg, self.info = cfg, INFO[cfg.data.dataset]

    cfg = ExperimentConfig.model_validate({"data": {"dataset": "mnist"}})  # every switch at its default
    assert "skips" not in autoencoder.model_spec(Ctx(cfg))[1]
    assert set(caenet.model_spec(Ctx(cfg))[1]) == {"in_channels", "image_size", "num_classes", "width", "hidden"}
    cfg.autoencoder.skips, cfg.caenet.head = False, "conv"
    assert autoencoder.model_spec(Ctx(cfg))[1]["skips"] is False and caenet.model_spec(Ctx(cfg))[1]["head"] == "conv"


# ---------------------------------------------------------------------------- study files and tables


def _study_file(tmp_path: Path, variants: str, seeds: str = "[0, 1]") -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(f"name: t\nexperiment: {REPO / 'configs' / 'mnist_lenet.yaml'}\n"
                    f"set: ['caenet.ablations=[]', autoencoder.compare_unclustered=false]\nseeds: {seeds}\n"
                    f"variants:\n{variants}")
    return path


def test_a_typo_in_a_variant_fails_in_one_line_before_anything_runs(tmp_path, cli):
    path = _study_file(tmp_path, "  - {name: method}\n  - {name: finetune, set: [caenet.encodr=finetune]}\n")
    result = cli(["study", str(path), "--set", f"runtime.cache_dir={tmp_path / 'cache'}"])
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "variant 'finetune': caenet.encodr: unknown key" in result.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "mlruns").exists()
    # a value of the wrong kind, a repeated seed, an unknown study key: one line each too
    for variants, seeds, message in [("  - {name: a, set: [caenet.encoder=maybe]}\n", "[0]", "caenet.encoder: Input should be"),
                                     ("  - {name: a}\n", "[1, 1]", "seeds repeat"),
                                     ("  - {name: a}\n  - {name: a}\n", "[0]", "variant names used twice: a")]:
        result = cli(["study", str(_study_file(tmp_path, variants, seeds))])
        assert result.returncode == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr


def test_dry_run_lists_every_cell_and_set_reaches_study_and_experiment_keys(tmp_path, cli):
    path = _study_file(tmp_path, "  - {name: method}\n  - {name: conv head, set: [caenet.head=conv]}\n")
    result = cli(["study", str(path), "--set", "seeds=[4, 5, 6]", "--set", "caenet.train.epochs=2", "--dry-run"])
    assert result.returncode == 0, result.stderr
    assert "6 cells: 2 variants x 3 seeds" in result.stdout and "conv head / seed 6" in result.stdout
    study, cells = load_study(path, ["seeds=[4, 5, 6]", "caenet.train.epochs=2"])
    assert [c.cfg.data.seed for c in cells] == [4, 5, 6, 4, 5, 6]
    assert all(c.cfg.caenet.train.epochs == 2 for c in cells) and cells[3].cfg.caenet.head == "conv"
    assert all(c.cfg.caenet.ablations == [] for c in cells)


def test_the_table_is_mean_and_sample_std_over_seeds(tmp_path):
    study, _ = load_study(_study_file(tmp_path, "  - {name: method}\n  - {name: kd, set: [caenet.kd.alpha=0.7]}\n"))
    rows = [{"variant": "method", "seed": 0, "caenet_test_acc": 0.90, "baseline_test_acc": 0.95, "delta_acc": -0.05,
             "reconstruction_mse": 0.01, "caenet_p50_ms": 1.0, "speedup": 2.0},
            {"variant": "method", "seed": 1, "caenet_test_acc": 0.92, "baseline_test_acc": 0.95, "delta_acc": -0.03,
             "reconstruction_mse": 0.02, "caenet_p50_ms": 1.0, "speedup": 2.0},
            {"variant": "kd", "seed": 0, "caenet_test_acc": 0.80, "baseline_test_acc": 0.95, "delta_acc": -0.15,
             "reconstruction_mse": 0.01, "caenet_p50_ms": 1.0, "speedup": 2.0},
            {"variant": "kd", "seed": 1, "error": "training 'caenet' failed after 2 retries: boom"}]
    summary = aggregate(study, rows, {"method": False, "kd": True})
    method, kd = summary["variants"]
    assert method["caenet_test_acc_mean"] == pytest.approx(0.91) and method["caenet_test_acc_std"] == pytest.approx(0.01414, abs=1e-4)
    assert kd["caenet_test_acc_std"] is None and kd["errors"] == {1: rows[3]["error"]}  # one seed: no std
    text = markdown({**summary, "name": "t", "seeds": [0, 1], "dataset": "mnist"})
    assert "| method | 91.00 ± 1.41 | -4.00 ± 1.41 |" in text
    assert "same CAE as method" in text and "1 (1 failed)" in text and "kd seed 1 failed: training" in text
    plot({**summary, "name": "t", "seeds": [0, 1]}, tmp_path / "study.png")  # the one-seed variant has no error bar
    assert (tmp_path / "study.png").stat().st_size > 5000


# ---------------------------------------------------------------------------- a real study


def test_smoke_study_on_real_data(tmp_path, data_root, monkeypatch, smoke_run):
    """Two variants x two seeds at smoke scale, grown from one seed without re-running its cells
    (`--set seeds=[...]`): a std per variant; the stages the variants share
    (each seed's baseline and CAE) trained once; the method's seed-0 cell, trained from nothing
    in this study's own cache, repeats the session's smoke run to the last digit of accuracy."""
    from suite.pipeline.tracking import Tracker
    from suite.study.cells import run_study, smoke_cells

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAENET_DATA", str(data_root))
    path = _study_file(tmp_path, "  - {name: method}\n  - {name: kd, set: [caenet.kd.alpha=0.7]}\n")
    settings = [f"runtime.cache_dir={tmp_path / 'cache'}", "runtime.progress=false"]
    lines: list[str] = []
    # seed 0 first; then the file's seeds [0, 1] grow the study (issue 28): only seed 1's cells train
    first = run_study(*_smoke(load_study(path, [*settings, "seeds=[0]"])), log=lines.append)
    first_cells = json.loads((Path(first["output"]) / "study.json").read_text())["cells"]
    study, cells = load_study(path, settings)
    summary = run_study(study, smoke_cells(cells), log=lines.append)

    method, kd = summary["variants"]
    for v in (method, kd):
        assert v["seeds"] == [0, 1] and not v["errors"]
        assert v["caenet_test_acc_std"] is not None and v["baseline_test_acc_std"] is not None
    assert kd["same_cae_as_reference"] and not method["same_cae_as_reference"]
    cells_out = json.loads((Path(summary["output"]) / "study.json").read_text())["cells"]
    assert all(not c["trained"] for c in cells_out if c["seed"] == 0)  # grown: the cells it had are not run again
    for seed in (0, 1):
        mine = [c for c in (first_cells if seed == 0 else cells_out) if c["seed"] == seed]
        assert sum("baseline" in c["trained"] for c in mine) == 1  # shared: trained by one cell, found cached by the other
        assert sum("autoencoder" in c["trained"] for c in mine) == 1
        assert all("caenet" in c["trained"] for c in mine)  # the variants differ here: each trains its own
        assert mine[0]["stage_keys"]["autoencoder"] == mine[1]["stage_keys"]["autoencoder"]
    assert sum("running -> " in line and "[baseline]" in line for line in lines) == 2  # one per seed, not per cell

    # same seed, same numbers: the session's smoke run (another cache) got the very same accuracies
    reference = json.loads(smoke_run["summary"].read_text())
    first = next(c for c in cells_out if c["variant"] == "method" and c["seed"] == 0)
    assert first["caenet_test_acc"] == pytest.approx(reference["caenet"]["test_acc"], abs=1e-9)
    assert first["baseline_test_acc"] == pytest.approx(reference["baseline"]["test_acc"], abs=1e-9)

    out = Path(summary["output"])
    assert pq.read_table(out / "cells.parquet").num_rows == 4
    text = (out / "study.md").read_text()
    assert (out / "study.png").stat().st_size > 5000 and re.search(r"\| kd \(did not converge: caenet at seeds? [0-9, ]+\) \|", text)  # smoke: near chance
    if any("baseline" in (c.get("not_converged") or []) for c in cells_out):  # the baseline's: once, under the table
        assert "The baseline did not converge at seed" in text and "baseline at seed" not in text
    tracker = Tracker(cells[0].cfg.runtime)
    parent = tracker.client.get_run(summary["mlflow_run_id"])
    assert parent.data.tags["kind"] == "study" and parent.info.status == "FINISHED"
    assert "method.caenet_test_acc_mean" in parent.data.metrics
    runs = tracker.client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["variant"] for r in runs) == ["kd", "kd", "method", "method"]
    assert all(r.info.status == "FINISHED" and "caenet_test_acc" in r.data.metrics for r in runs)
    stages = tracker.client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{runs[0].info.run_id}'")
    assert {"baseline", "caenet", "evaluate"} <= {r.data.tags["stage"] for r in stages}

    # a re-run trains nothing and gives the same table
    again = run_study(study, smoke_cells(cells), log=lines.append)
    assert [v["caenet_test_acc_mean"] for v in again["variants"]] == [method["caenet_test_acc_mean"], kd["caenet_test_acc_mean"]]
    assert all(not c["trained"] for c in json.loads((out / "study.json").read_text())["cells"])


def _smoke(study_and_cells):
    study, cells = study_and_cells
    from suite.study.cells import smoke_cells

    return study, smoke_cells(cells)


def test_a_failing_cell_is_reported_and_the_others_go_on(tmp_path, cli, smoke_run, monkeypatch):
    """One variant whose cells fail (the paper's VGG16 features without ImageNet weights): the
    other variant's row is still computed (here from the session's smoke cache: nothing trains),
    the failure is a line under the table and a FAILED cell run, and the exit code is 1."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no weights here, and no internet
    path = _study_file(tmp_path, "  - {name: method}\n  - {name: vgg, set: [features.extractor=vgg16-imagenet, autoencoder.targets=cluster]}\n", seeds="[0]")
    cache = smoke_run["cwd"] / "artifacts"
    done = cli(["study", str(path), "--smoke", "--set", f"runtime.cache_dir={cache}", "--out", str(tmp_path / "out")])
    assert done.returncode == 1, done.stderr[-2000:]
    assert "1 of 2 cells failed" in done.stderr
    table = (tmp_path / "out" / "study.md").read_text()
    assert "| method | " in table and "The baseline did not converge at seed 0 " in table and "| vgg | n/a |" in table and "vgg seed 0 failed: vgg16-imagenet" in table
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("caenet").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("kind") == "study")
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_cells"] == "1"
    status = {r.data.tags["variant"]: r.info.status for r in runs if r.data.tags.get("kind") == "study-cell"}
    assert status == {"method": "FINISHED", "vgg": "FAILED"}


def test_a_timing_study_trains_every_cell_fresh_and_writes_the_timing_view(tmp_path, cli, smoke_run):
    """``timing: fresh`` (issue 26): over the session's smoke cache, where a shared study would
    train nothing, each cell trains every stage itself; the table gives each stage's seconds,
    images/s, speed-up and efficiency, timing.png is drawn and the run's cells per hour join
    the study's history. ``data.fraction`` (the data axis) halves the training images."""
    path = _study_file(tmp_path, "  - {name: all, set: [data.fraction=1.0]}\n  - {name: half, set: [data.fraction=0.5]}\n", seeds="[0]")
    path.write_text(path.read_text() + "timing: fresh\n")
    cache = smoke_run["cwd"] / "artifacts"
    done = cli(["study", str(path), "--smoke", "--set", f"runtime.cache_dir={cache}", "--out", str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr[-2000:]
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    for cell in study["cells"]:
        assert cell["trained"] == ["baseline", "clustering", "autoencoder", "caenet"]  # nothing from the shared cache
        assert {"baseline", "entropy", "features", "clustering", "targets", "autoencoder", "caenet", "evaluate"} <= set(cell["stage_seconds"])
        assert cell["wall_s"] == pytest.approx(sum(cell["stage_seconds"].values()))
        assert cell["images_per_second"]["baseline"] > 0 and cell["cluster_nodes"] == 1 and cell["cpus_per_training"] == 1
    timing = study["timing"]
    full, half = timing["variants"]
    assert full["speedup"] == 1.0 and half["speedup"] == pytest.approx(full["wall_s_mean"] / half["wall_s_mean"])
    assert half["efficiency"] == pytest.approx(half["speedup"])  # the same resources held
    table = (tmp_path / "out" / "study.md").read_text()
    assert "| all | 1 worker(s): 1 CPU |" in table and "cells per hour on 1 node(s)" in table
    assert (tmp_path / "out" / "timing.png").stat().st_size > 10_000
    history = (tmp_path / "out.timing-history.jsonl").read_text().splitlines()
    assert len(history) == 1 and json.loads(history[0])["cells"] == 2 and timing["history"] == [json.loads(history[0])]
    # each cell's stages live in a folder of its own
    fresh = sorted((tmp_path / "out" / "fresh").glob("*/*"))
    assert [p.name for p in fresh] == ["all-seed0", "half-seed0"]


def test_data_fraction_keeps_the_first_share_and_old_keys():
    from suite.config import DataConfig

    assert "fraction" not in DataConfig().model_dump()  # at its default: every stage key as before it existed
    assert DataConfig(fraction=0.5).model_dump()["fraction"] == 0.5
    for name in ("scaling_workers", "scaling_data", "scaling_nodes"):  # the shipped timing studies load
        study, cells = load_study(REPO / "configs" / "studies" / f"{name}.yaml")
        assert study.timing == "fresh" and cells

