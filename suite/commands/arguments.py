"""Arguments several commands share."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from suite.config import ExperimentConfig
from suite.experiment import resolve as resolve_config


def add_set(parser: argparse.ArgumentParser, example: str = "--set baseline.train.epochs=3") -> None:
    """``--profile`` and ``--set``: the ways to change a config from the command line."""
    parser.add_argument("--profile", action="append", metavar="NAME", default=[],
                        help="overlay a profile before --set: cpu, gpu or cluster (configs/profiles/), or a YAML file; repeatable")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                        help=f"override a config key (dotted path), e.g. {example}; repeatable")


def add_smoke(parser: argparse.ArgumentParser, text: str = "shrink to a few hundred images and one epoch (same as --set smoke=true)") -> None:
    parser.add_argument("--smoke", action="store_true", help=text)


def overrides(args) -> list[str]:
    """``--set`` values, plus ``smoke=true`` for ``--smoke``."""
    return list(args.set or []) + (["smoke=true"] if getattr(args, "smoke", False) else [])


def config_of(args, source: str) -> ExperimentConfig:
    """The config a command line names (a YAML file, or the MLflow run id of ``caenet run``),
    with its ``--profile`` overlays, ``--set`` overrides and ``--smoke``."""
    return resolve_config(source, overrides(args), getattr(args, "profile", None))


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_publish(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--publish", metavar="DIR", help=f"also copy {what} to DIR (docs/results: the tables of the README "
                        "and docs/ are generated from there by scripts/results_tables.py)")


def publish(folder: str | Path, name: str, smoke: bool, out: str | Path, files: dict[str, str]) -> None:
    """Copy each output of the run folder ``out`` (value) to ``folder/<name><suffix>`` (key) and
    say where; the folder is made. A smoke run's name ends in -smoke, so that it never replaces
    the real one. An output the run did not write (a sweep without a finished trial has no plot)
    is left out."""
    folder, name = Path(folder), name + ("-smoke" if smoke else "")
    files = {name + suffix: Path(out) / source for suffix, source in files.items() if (Path(out) / source).exists()}
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        shutil.copyfile(source, folder / name)
    print("published: " + ", ".join(str(folder / name) for name in files))
