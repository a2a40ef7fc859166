"""Reading experiment configs: YAML files with ``extends:``, profiles, ``--set`` overrides,
and the sweep / study files that wrap an experiment config. Every mistake is a
``ConfigError`` in one line (``one_line`` formats pydantic's errors) naming the key or file.

These functions check structure and values (``suite.config.schema``); ``suite.experiment``
adds the check of names against the plug-in registries, and is what commands call.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from suite.config.schema import ExperimentConfig
from suite.errors import ConfigError


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value), the value parsed as a YAML scalar/list."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r} ({exc.__class__.__name__})") from None
    return key, value


# Every key renamed since the configs were first published, with what replaced it: an old
# file then fails naming the new key instead of "unknown key". All from 85618d3 (the one timing
# protocol); found by comparing each schema class's fields at every commit.
RENAMED = {
    # the experiment config
    "evaluate.latency.rounds": "evaluate.latency.windows",
    "evaluate.latency.runs": "evaluate.latency.window_queries (calls per window: the old runs / rounds)",
    # the boards file (suite/edge/boards.py)
    "bench.rounds": "bench.windows",
    "bench.min_runs": "bench.window_queries",
    "bench.min_seconds": "bench.window_seconds",
}


def one_line(exc: ValidationError, prefix: str = "") -> str:
    """Every error of ``exc`` on one line, each as ``key: message``; ``prefix`` goes before each
    key (a method's entry, ``['X']``, whose errors ``compare.methods`` then reports)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = (f"{prefix}.{loc}" if loc else prefix) if prefix else (loc or "<root>")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"renamed: use {RENAMED[loc]}" if loc in RENAMED else "unknown key"
        elif "input" in err and err["type"] not in ("missing", "value_error"):  # a validator's message says it
            msg = f"{msg} (got {err['input']!r})"
        # a method's own errors start with its entry, e.g. "['X'].ratio: Field required"
        parts.append(f"{key}{'' if msg.startswith('[') else ': '}{msg}")
    return "; ".join(parts)


PROFILES = Path(__file__).resolve().parents[2] / "configs" / "profiles"


def profile(name: str) -> dict:
    """A profile's overlay: ``configs/profiles/<name>.yaml`` (cpu, gpu, cluster), or a YAML path."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILES / f"{name}.yaml"
    known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml"))) or "none"
    return read_yaml(path, "profile", f"known profiles: {known}; or give a YAML file")


def overlay(tree: dict, over: dict) -> dict:
    """``tree`` with ``over``'s keys set, section by section (lists and values replace)."""
    out = dict(tree)
    for key, value in over.items():
        out[key] = overlay(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def from_dict(tree: dict | None, overrides: list[str] | None = None, source: str = "config",
              profiles: list[str] | None = None) -> ExperimentConfig:
    """Validate a config tree: ``profiles`` overlaid in order, then the ``--set`` overrides
    (registry names unchecked: ``suite.experiment.check``)."""
    tree = copy.deepcopy(tree or {})
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(tree).__name__}")
    for name in profiles or []:
        tree = overlay(tree, profile(name))
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    try:
        cfg = ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {one_line(exc)}") from None
    return cfg


def read_yaml(path: str | Path, kind: str, missing_hint: str, mapping: bool = True):
    """A YAML file's content, or ConfigError in one line: missing ``kind`` (with ``missing_hint``),
    malformed YAML (with line and column), or a top level that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {kind} ({missing_hint})")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if mapping and not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(tree).__name__}")
    return tree


def load_config(path: str | Path, overrides: list[str] | None = None, profiles: list[str] | None = None) -> ExperimentConfig:
    """Read and validate a YAML config (``profiles`` and ``overrides`` applied); raises
    ConfigError with a one-line message."""
    return from_dict(_config_tree(Path(path)), overrides, source=str(path), profiles=profiles)


def _config_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file's keys; ``extends: other.yaml`` (relative to the file) starts from that
    file's keys, which this one's replace section by section (``configs/*_paper.yaml``)."""
    tree = read_yaml(path, "config file", "see configs/ for examples", mapping=False)
    if tree is None:  # an empty file would silently run every default (the CIFAR-10 experiment)
        raise ConfigError(f"{path}: the config file is empty; state at least data.dataset (see configs/ for examples)")
    if not isinstance(tree, dict) or "extends" not in tree:
        return tree
    parent = tree.pop("extends")
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected the path of another config file, got {parent!r}")
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen or parent_path == path.resolve():
        raise ConfigError(f"{path}: extends: {parent} extends this file again (a cycle)")
    base = _config_tree(parent_path, (*seen, path.resolve()))
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: extends: {parent}: the top level must be a mapping of keys, got {type(base).__name__}")
    return overlay(base, tree)


def to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def split_overrides(overrides: list[str], own: type[BaseModel]) -> tuple[list[str], list[str]]:
    """``--set`` has one grammar on every command, ``dotted.key=value``. For a file that wraps an
    experiment config (a sweep, a study; its model ``own``), a key whose first part is a section
    of the experiment config (``runtime.cache_dir=/abs``, ``clustering.k=3``) applies to the
    experiment; any other key is a key of the file (``slo.speedup=4``, ``seeds=[0,1]``, ``name=``).
    Returns (the file's overrides, the experiment's)."""
    experiment_keys = set(ExperimentConfig.model_fields) - set(own.model_fields)
    mine, experiment = [], []
    for text in overrides:
        key, _ = parse_override(text)
        (experiment if key.split(".")[0] in experiment_keys else mine).append(text)
    return mine, experiment


def load_wrapper(path: str | Path, own: type[BaseModel], kind: str, hint: str, overrides: list[str] | None = None,
                 profiles: list[str] | None = None):
    """(the file as ``own``, its base experiment config) for a file that wraps an experiment
    config: an ``experiment:`` path (relative to the file) and a ``set:`` list of overrides for
    it. ``overrides`` (``--set``) are split by ``split_overrides``; the experiment's go after the
    file's own ``set:``, so the command line wins. Raises ConfigError in one line."""
    path = Path(path)
    tree = read_yaml(path, kind, hint)
    mine, experiment_overrides = split_overrides(list(overrides or []), own)
    for text in mine:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    if experiment_overrides:
        tree["set"] = [*(tree.get("set") or []), *experiment_overrides]
    try:
        wrapper = own.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {one_line(exc)}") from None
    experiment = Path(wrapper.experiment)
    if not experiment.is_absolute():
        experiment = (path.parent / experiment).resolve()
    return wrapper, load_config(experiment, wrapper.set, profiles)
