"""Typed experiment configs, validated on load.

A config is one YAML file (see ``configs/``); every key has a type and a default here, so
the YAML only states what differs. Loading rejects unknown keys, wrong types and impossible
values with a one-line ``ConfigError`` that names the dotted key. ``--set a.b=value``
overrides are parsed as YAML scalars and validated the same way.

``smoke: true`` shrinks the same experiment to a few hundred images and one epoch (the
big_vision "one switch for a laptop" idea); tests and CI use it.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from suite.errors import ConfigError  # noqa: F401  (re-exported: raised for every config mistake)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    dataset: str = "cifar10"  # any dataset of suite/data/sources/ (one file each; `caenet data check` lists them)
    # Folder holding the standard layouts (MNIST/raw, cifar-10-batches-py, ...).
    # null: $CAENET_DATA, then the offline copies this machine ships, then download.
    root: str | None = None
    download: bool = True  # fall back to torchvision's download when files are missing
    train_limit: int | None = Field(default=None, ge=10)  # first N training images
    test_limit: int | None = Field(default=None, ge=10)
    val_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)  # held out from training
    seed: int = 0

    @field_validator("dataset")
    @classmethod
    def _registered(cls, name: str) -> str:
        # Deferred on purpose: suite.data imports this module (DataConfig) and torch.
        from suite.data.registry import names

        if name not in names():
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(names())}")
        return name


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    augment: bool = False  # random crop (pad 4) + horizontal flip for CIFAR, crop only for 28x28
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)


class BaselineConfig(_Strict):
    model: str = "alexnet"
    train: TrainConfig = TrainConfig(epochs=15, augment=True)


class FeaturesConfig(_Strict):
    # vgg16-imagenet: the paper's choice (needs ImageNet weights on disk or internet);
    # baseline: the trained baseline's penultimate layer; pixels: PCA of raw pixels.
    extractor: Literal["vgg16-imagenet", "baseline", "pixels"] = "baseline"
    pca_dim: int | None = Field(default=64, ge=2)  # reduce features before clustering; null keeps all


class ClusteringConfig(_Strict):
    method: Literal["kmeans", "cosine", "dbscan", "hdbscan"] = "kmeans"
    # kmeans: k is picked per class by the elbow method over [k_min, k_max] ...
    k_min: int = Field(default=1, ge=1)
    k_max: int = Field(default=8, ge=1)
    # ... unless k is fixed here (k=1 is "no clustering": one target per class).
    k: int | None = Field(default=None, ge=1)
    kmeans_iters: int = Field(default=25, ge=1)
    kmeans_restarts: int = Field(default=3, ge=1)
    cosine_similarity: float = Field(default=0.8, gt=0, lt=1)  # merge threshold
    dbscan_eps: float = Field(default=0.5, gt=0)
    dbscan_min_samples: int = Field(default=5, ge=1)
    hdbscan_min_cluster_size: int = Field(default=10, ge=2)
    # Where the per-class searches run: Ray tasks (auto: when Ray is up with >1 CPU) or a loop.
    backend: Literal["auto", "ray", "local"] = "auto"

    @model_validator(mode="after")
    def _range(self) -> "ClusteringConfig":
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be >= k_min ({self.k_min})")
        return self


class PruneConfig(_Strict):
    # Magnitude pruning of every conv/deconv weight while the CAE trains (paper, Sec. III-A):
    # the final share of zeros, reached by a cubic ramp over the first 60% of the epochs.
    weight_ratio: float = Field(default=0.0, ge=0, lt=1)


class AutoencoderConfig(_Strict):
    model: str = "cae"  # picks the 28x28x1 or 32x32x3 variant from the dataset
    width: float = Field(default=1.0, gt=0, le=4)  # channel multiplier (structural knob)
    # What each image converts to: cluster = the easiest image of its class-cluster (the method);
    # class = the easiest of its class (k=1); self = itself (a plain autoencoder); random = a
    # random training image of its class (fixed by data.seed). The last three are ablations.
    targets: Literal["cluster", "class", "self", "random"] = "cluster"
    skips: bool = True  # the UNet's encoder-to-decoder concatenations (false: a plain conv autoencoder)
    prune: PruneConfig = PruneConfig()
    train: TrainConfig = TrainConfig(epochs=20, optimizer="adam", lr=2e-3, weight_decay=0.0)
    # The paper's 0.012 -> 0.0065 comparison: also train the CAE on the other kind of target (one
    # per class when `targets` is cluster, class-cluster targets when it is class), for the MSEs.
    compare_unclustered: bool = True


class KDConfig(_Strict):
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)  # weight of the soft-target term


class CAENetConfig(_Strict):
    # The encoder of CAE-Net: frozen = the CAE's weights, fixed (the method); finetune = the
    # CAE's weights trained on at finetune_lr_scale x the learning rate; random = frozen random
    # weights (the paper's likely "without transfer"); scratch = random, trained end to end.
    encoder: Literal["frozen", "finetune", "random", "scratch"] = "frozen"
    finetune_lr_scale: float = Field(default=0.1, gt=0, le=1)
    # dense: Linear(code, classifier_hidden)-ReLU-Dropout-Linear; conv: the authors' head, one
    # 3x3 conv of head_filters channels, ReLU, one Linear to the classes
    head: Literal["dense", "conv"] = "dense"
    head_filters: int = Field(default=6, ge=1)
    classifier_hidden: int = Field(default=256, ge=8)
    kd: KDConfig = KDConfig()
    train: TrainConfig = TrainConfig(epochs=15, optimizer="adam", lr=2e-3, weight_decay=1e-4)
    # no_transfer: the same network trained from scratch (random encoder, hard labels);
    # no_kd: pretrained frozen encoder, hard labels only.
    ablations: list[Literal["no_transfer", "no_kd"]] = ["no_transfer", "no_kd"]


class LatencyConfig(_Strict):
    threads: int = Field(default=1, ge=1)
    warmup: int = Field(default=20, ge=0)
    runs: int = Field(default=300, ge=5)  # timed calls per model, split over the rounds
    rounds: int = Field(default=5, ge=1)  # alternate between models this many times
    fold_batchnorm: bool = True  # fold BN into convs for inference, as an exporter would


class EvaluateConfig(_Strict):
    latency: LatencyConfig = LatencyConfig()
    batch_size: int = Field(default=256, ge=1)


class MethodParams(_Strict):
    """One competitor row of Table I / II (``caenet compare``).

    Each ``kind`` is a subclass in its own module of ``suite/methods/`` with the fields that
    kind takes, its checks and its ``run``; ``compare.methods`` picks the subclass by ``kind``.
    The class variables tell the comparison stage what a kind needs.
    """

    name: str = Field(min_length=1)  # the row's label, e.g. "AlexNet-KD"
    kind: str  # no default: it names the subclass, and is part of every cache key
    of: str = "baseline"  # the model this method compresses: baseline, caenet or an earlier method's name
    train: TrainConfig | None = None  # null: compare.train (from scratch) or compare.finetune (after compressing)

    fresh: ClassVar[bool] = False  # trained from scratch on the data ('of' unused)
    trains: ClassVar[bool] = True  # runs a training (int8 does not: no train settings in its key)
    teacher: ClassVar[bool] = False  # reads the baseline's logits (the entropy stage) as soft targets
    times_itself: ClassVar[bool] = False  # times candidates to choose one: latency settings and budget are in its key
    uses_tune: ClassVar[bool] = False  # runs a Ray Tune search (a local Ray then starts with its dashboard)
    artifacts: ClassVar[tuple[str, ...]] = ()  # files of its stage folder logged to MLflow besides spec.json

    def train_config(self, compare: "CompareConfig") -> TrainConfig:
        return self.train or (compare.train if self.fresh else compare.finetune)

    def budget(self, compare: "CompareConfig") -> float | None:
        """The latency budget (ms, batch-1 p50 on this machine) for kinds that time themselves."""
        return getattr(self, "budget_ms", None) or compare.slo_ms

    def check(self, compare: "CompareConfig") -> None:
        """Checks that need the rest of ``compare``; raise ValueError with a one-line message."""

    def smoke(self) -> "MethodParams":
        """This method shrunk for ``smoke: true`` (its training is already cut to one epoch)."""
        return self

    def key(self, cfg: "ExperimentConfig") -> dict:
        """What the stage's cache key holds besides the data settings. Defaults are left out,
        so a new option (with its default) does not invalidate finished stages."""
        key: dict = {"method": self.model_dump(exclude={"name", "train"}, exclude_defaults=True)}
        if self.trains:
            key["train"] = self.train_config(cfg.compare).model_dump()
        if self.times_itself:
            key["latency"] = cfg.evaluate.latency.model_dump()
            key["budget_ms"] = self.budget(cfg.compare)
        return key


class CompareConfig(_Strict):
    # The rows besides the baseline and CAE-Net, in order; 'of' may name an earlier row.
    # Each entry is parsed as the MethodParams subclass its 'kind' names (``suite.methods``).
    methods: list[SerializeAsAny[MethodParams]] = []
    train: TrainConfig = TrainConfig(epochs=10, augment=True)  # architectures trained from scratch
    finetune: TrainConfig = TrainConfig(epochs=3, optimizer="adam", lr=5e-4, weight_decay=0.0, schedule="cosine")
    slo_ms: float | None = Field(default=None, gt=0)  # batch-1 p50 on this machine; drawn in Fig. 1
    calibration_images: int = Field(default=256, ge=8)  # int8: training images that fix activation ranges
    branchy_tolerance: float = Field(default=0.01, ge=0, lt=1)  # accuracy BranchyNet's exits may give up on val

    @field_validator("methods", mode="before")
    @classmethod
    def _by_kind(cls, entries):
        # Deferred on purpose: the method modules import the training stack, which imports this module.
        from suite.methods import parse_method

        if not isinstance(entries, list):
            return entries
        return [parse_method(e, i) if not isinstance(e, MethodParams) else e for i, e in enumerate(entries)]

    @model_validator(mode="after")
    def _order(self) -> "CompareConfig":
        seen = {"baseline", "caenet"}
        for m in self.methods:
            if m.name in seen:
                raise ValueError(f"method name {m.name!r} is used twice (or is reserved)")
            m.check(self)
            if not m.fresh and m.of not in seen:
                raise ValueError(f"method {m.name!r}: 'of: {m.of}' names no earlier method (have {sorted(seen)})")
            seen.add(m.name)
        return self


class RuntimeConfig(_Strict):
    workers: int = Field(default=1, ge=1)  # Ray Train data-parallel workers per training
    cpus_per_worker: float = Field(default=2, gt=0)  # Ray resources each training worker reserves
    threads_per_worker: int | None = Field(default=None, ge=1)  # torch threads; null: cpus_per_worker rounded up
    # auto: GPUs when the cluster has or can autoscale enough for a training, else CPU; yes: GPUs,
    # or stop before the first stage; decided once per run (suite.distributed.gpus)
    use_gpu: Literal["auto", "yes", "no"] = "auto"
    # Below 1: one-worker trainings share a GPU (0.25: four at once); data-parallel ranks cannot (NCCL)
    gpus_per_worker: float = Field(default=1.0, gt=0)
    max_failures: int = Field(default=2, ge=0)  # worker restarts, resuming from checkpoints
    # auto: a one-worker training runs as a Ray task on a warm worker process (same checkpoints,
    # retries and MLflow record; ~15 s less start-up per training on 2 cores, benchmarks/overhead.py);
    # more workers run on Ray Train. ray-train: every training on Ray Train.
    trainer: Literal["auto", "ray-train"] = "auto"
    # Conv models train in channels-last memory format: LeNet / CAE on MNIST +17-27% images/s on
    # 2 threads, +8-33% on 1 (benchmarks/overhead.py); results equal up to float rounding.
    channels_last: bool = True
    # bf16: the forward pass of every training under bfloat16 autocast (weights, optimizer and
    # loss stay float32). On a CPU with AVX512-BF16 / AMX: AlexNet 144 -> 255 img/s, CIFAR CAE
    # ~1.3x (benchmarks/overhead.py --set runtime.precision=bf16); on older CPUs it is slower.
    # Evaluation and latency stay float32.
    precision: Literal["fp32", "bf16"] = "fp32"
    num_cpus: int | None = Field(default=None, ge=1)  # local Ray only; null: all cores
    cache_dir: str = "artifacts"  # stage outputs; relative to the working directory
    # Training checkpoints, on storage every node reaches: a shared mount or s3:// / gs://
    # (pyarrow.fs). null: $CAENET_STORAGE, else the stage's folder in cache_dir (one machine).
    storage: str | None = Field(default=None, min_length=1)
    tracking_uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite in ./mlruns
    experiment: str = "caenet"
    # Model Registry name of the run's CAE-Net ({name}: the config's name; a sweep registers its
    # SLO pick as "<sweep name>-slo-caenet"); "" registers nothing.
    registered_model: str = "{name}-caenet"
    progress: bool = True  # progress bars in the driver, and progress lines inside long training epochs
    progress_every_s: float = Field(default=20.0, gt=0)  # at most one such line per this many seconds

    def threads(self) -> int:
        return self.threads_per_worker or max(1, math.ceil(self.cpus_per_worker))

    def bars(self) -> bool:
        """Progress bars: when asked for, and only on a terminal (in a log they are noise)."""
        return self.progress and sys.stderr.isatty()

    @field_validator("use_gpu", mode="before")
    @classmethod
    def _yes_no(cls, value):
        # YAML reads `--set runtime.use_gpu=yes` (and `use_gpu: no` in a file) as a boolean
        return {True: "yes", False: "no"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("registered_model")
    @classmethod
    def _template(cls, text: str) -> str:
        try:
            text.format(name="x")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"{text!r}: the only placeholder is {{name}} (the config's name)") from None
        return text

    @model_validator(mode="after")
    def _whole_gpus_for_ranks(self) -> "RuntimeConfig":
        if self.workers > 1 and self.gpus_per_worker < 1 and self.use_gpu != "no":
            raise ValueError(f"gpus_per_worker {self.gpus_per_worker:g} with workers {self.workers}: the ranks of a data-parallel "
                             f"training need a GPU each (NCCL refuses two on one GPU); set gpus_per_worker to 1, or workers to 1 "
                             f"to share GPUs between trainings")
        return self

    def model_name(self, name: str) -> str | None:
        """The registered model's name for a run named ``name``; None: do not register."""
        return self.registered_model.format(name=name) or None


class ExperimentConfig(_Strict):
    name: str = "caenet"
    smoke: bool = False  # shrink to a few hundred images and one epoch (tests, laptops)
    data: DataConfig = DataConfig()
    baseline: BaselineConfig = BaselineConfig()
    features: FeaturesConfig = FeaturesConfig()
    clustering: ClusteringConfig = ClusteringConfig()
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    caenet: CAENetConfig = CAENetConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    compare: CompareConfig = CompareConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    def effective(self) -> "ExperimentConfig":
        """The config actually run: ``smoke`` applied."""
        if not self.smoke:
            return self
        cfg = self.model_copy(deep=True)
        cfg.data.train_limit = min(cfg.data.train_limit or 400, 400)
        cfg.data.test_limit = min(cfg.data.test_limit or 200, 200)
        cfg.compare.methods = [m.smoke() for m in cfg.compare.methods]
        for train in (cfg.baseline.train, cfg.autoencoder.train, cfg.caenet.train, cfg.compare.train, cfg.compare.finetune,
                      *(m.train for m in cfg.compare.methods if m.train)):
            train.epochs = 1
        cfg.compare.calibration_images = min(cfg.compare.calibration_images, 64)
        cfg.clustering.k_max = min(cfg.clustering.k_max, 3)
        cfg.clustering.k_min = min(cfg.clustering.k_min, cfg.clustering.k_max)
        cfg.evaluate.latency.warmup = min(cfg.evaluate.latency.warmup, 3)
        cfg.evaluate.latency.runs = min(cfg.evaluate.latency.runs, 20)
        return cfg


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
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


def _one_line(exc: ValidationError, prefix: str = "") -> str:
    """Every error of ``exc`` on one line, each as ``key: message``; ``prefix`` goes before each
    key (a method's entry, ``['X']``, whose errors ``compare.methods`` then reports)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = (f"{prefix}.{loc}" if loc else prefix) if prefix else (loc or "<root>")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and err["type"] not in ("missing", "value_error"):  # a validator's message says it
            msg = f"{msg} (got {err['input']!r})"
        # a method's own errors start with its entry, e.g. "['X'].ratio: Field required"
        parts.append(f"{key}{'' if msg.startswith('[') else ': '}{msg}")
    return "; ".join(parts)


PROFILES = Path(__file__).resolve().parents[1] / "configs" / "profiles"


def profile(name: str) -> dict:
    """A profile's overlay: ``configs/profiles/<name>.yaml`` (cpu, gpu, cluster), or a YAML path."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILES / f"{name}.yaml"
    known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml"))) or "none"
    return read_yaml(path, "profile", f"known profiles: {known}; or give a YAML file")


def _overlay(tree: dict, overlay: dict) -> dict:
    """``tree`` with ``overlay``'s keys set, section by section (lists and values replace)."""
    out = dict(tree)
    for key, value in overlay.items():
        out[key] = _overlay(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def from_dict(tree: dict | None, overrides: list[str] | None = None, source: str = "config",
              profiles: list[str] | None = None) -> ExperimentConfig:
    """Validate a config tree: ``profiles`` overlaid in order, then the ``--set`` overrides."""
    tree = copy.deepcopy(tree or {})
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(tree).__name__}")
    for name in profiles or []:
        tree = _overlay(tree, profile(name))
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        cfg = ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_one_line(exc)}") from None
    _check_model_names(cfg, source)
    return cfg


def _check_model_names(cfg: "ExperimentConfig", source: str) -> None:
    """Every architecture a config names exists in the model registry: a typo fails here, in one
    line, not after Ray started and the training failed its retries."""
    from suite.models import list_models  # deferred: the registry imports torch (every command needs it anyway)

    known = set(list_models())
    named = [("baseline.model", cfg.baseline.model), ("autoencoder.model", cfg.autoencoder.model)]
    named += [(f"compare.methods[{m.name!r}].model", m.model) for m in cfg.compare.methods if getattr(m, "model", None)]
    for key, name in named:
        if name not in known:
            raise ConfigError(f"{source}: {key}: unknown model {name!r}; registered: {', '.join(sorted(known))}")


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
    return _overlay(base, tree)


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
        _set_dotted(tree, key, value)
    if experiment_overrides:
        tree["set"] = [*(tree.get("set") or []), *experiment_overrides]
    try:
        wrapper = own.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_one_line(exc)}") from None
    experiment = Path(wrapper.experiment)
    if not experiment.is_absolute():
        experiment = (path.parent / experiment).resolve()
    return wrapper, load_config(experiment, wrapper.set, profiles)
