"""The experiment config's schema: every key with its type, default and bounds.

A config is one YAML file (see ``configs/``) that states only what differs from the defaults
here; ``suite.config.loader`` reads it. Validation rejects unknown keys, wrong types and
impossible values. Names that plug-in registries own (datasets, model architectures, method
kinds) are checked one layer up, by ``suite.experiment``, which also parses each
``compare.methods`` entry as its kind's class.

``smoke: true`` shrinks the same experiment to a few hundred images and one epoch (the
big_vision "one switch for a laptop" idea); tests and CI use it.
"""

from __future__ import annotations

import math
import sys
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_serializer, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Grown(_Strict):
    """A section that gained keys after caches existed: at their defaults they are left out of
    every dump, and so out of every stage's cache key (a cache made before them stays valid)."""

    _LATER_KEYS: ClassVar[dict] = {}

    @model_serializer(mode="wrap")
    def _without_later_defaults(self, handler):
        out = handler(self)
        for key, default in self._LATER_KEYS.items():
            if key in out and out[key] == default:
                del out[key]
        return out


class DataConfig(_Grown):
    dataset: str = "cifar10"  # any dataset of suite/data/sources/ (one file each; `caenet data check` lists them)
    # Folder holding the standard layouts (MNIST/raw, cifar-10-batches-py, ...).
    # null: $CAENET_DATA, then the offline copies this machine ships, then download.
    root: str | None = None
    download: bool = True  # fall back to torchvision's download when files are missing
    train_limit: int | None = Field(default=None, ge=10)  # first N training images
    test_limit: int | None = Field(default=None, ge=10)
    val_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)  # held out from training
    seed: int = 0
    # The first share of the training images (after train_limit, so it shrinks a --smoke run
    # too): the axis of a study of how cost grows with data (configs/studies/scaling_data.yaml).
    fraction: float = Field(default=1.0, gt=0.0, le=1.0)

    _LATER_KEYS: ClassVar[dict] = {"fraction": 1.0}


class TrainConfig(_Grown):
    """One training's recipe. Where each default comes from (none was tuned by a search here;
    the shipped configs set their own where a study measured a better one):"""

    # untuned: a length for the small offline subsets on 2 CPU cores; configs/*.yaml set each
    # training's own, and min_steps / patience below fit it to the data (tests/test_convergence.py)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)  # untuned: a common CIFAR batch; the CIFAR configs use 64
    optimizer: Literal["sgd", "adam"] = "sgd"  # the classic CIFAR recipe (SGD + momentum + weight decay); untuned
    # with onecycle, the peak rate: the usual 0.05-0.1 of SGD on CIFAR-sized nets; untuned here
    # (AlexNet at 0.05 converged in 30 epochs on the subset, Table I of 2026-12-08)
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)  # the standard SGD momentum; untuned
    weight_decay: float = Field(default=5e-4, ge=0)  # the standard CIFAR value (AlexNet/VGG/ResNet papers); untuned
    # onecycle: one warm-up and anneal per training, so a short schedule ends at a low rate and
    # its last epochs settle (the convergence test reads them); cosine for fine-tuning (compare.finetune)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    augment: bool = False  # random crop (pad 4) + horizontal flip for CIFAR, crop only for 28x28
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    # A length that fits the data: at least this many optimizer steps, epochs raised on small
    # data (1,500 images at batch 128 are 10 steps an epoch: 6 epochs leave LeNet at chance,
    # tests/test_convergence.py); 0: the epochs as given.
    min_steps: int = Field(default=0, ge=0)
    # Early stop: end after this many epochs without a better validation accuracy; the best
    # epoch's weights are the result. null: every epoch runs.
    patience: int | None = Field(default=None, ge=1)

    _LATER_KEYS: ClassVar[dict] = {"min_steps": 0, "patience": None}


class BaselineConfig(_Strict):
    model: str = "alexnet"
    train: TrainConfig = TrainConfig(epochs=15, augment=True)


class FeaturesConfig(_Strict):
    # vgg16-imagenet: the paper's choice (needs ImageNet weights on disk or internet);
    # baseline: the trained baseline's penultimate layer; pixels: PCA of raw pixels.
    extractor: Literal["vgg16-imagenet", "baseline", "pixels"] = "baseline"
    pca_dim: int | None = Field(default=64, ge=2)  # reduce features before clustering; null keeps all


class ClusteringConfig(_Grown):
    method: Literal["kmeans", "cosine", "dbscan", "hdbscan"] = "kmeans"
    # kmeans: k is picked per class by the elbow method over [k_min, k_max] ...
    k_min: int = Field(default=1, ge=1)
    k_max: int = Field(default=8, ge=1)
    # ... unless k is fixed here (k=1 is "no clustering": one target per class).
    k: int | None = Field(default=None, ge=1)
    kmeans_iters: int = Field(default=25, ge=1)
    kmeans_restarts: int = Field(default=3, ge=1)
    # How the elbow search runs k-means at each k: "independent" (FAISS from scratch at each k,
    # kmeans_restarts random starts) or "warm_start" (k starts from k-1's centroids plus one
    # k-means++ point; kmeans_restarts such chains, the best inertia per k): for many large
    # classes, 2.4x faster at ImageNet size (1000 x 1300 x 512) with the inertia summed over
    # classes within 1% at every k (docs/performance.md); on small classes (~60 images) a k can
    # come out up to 3% worse.
    elbow_search: Literal["independent", "warm_start"] = "independent"
    cosine_similarity: float = Field(default=0.8, gt=0, lt=1)  # merge threshold
    dbscan_eps: float = Field(default=0.5, gt=0)
    dbscan_min_samples: int = Field(default=5, ge=1)
    hdbscan_min_cluster_size: int = Field(default=10, ge=2)
    # Where the per-class searches run: Ray tasks (auto: when Ray is up with >1 CPU) or a loop.
    backend: Literal["auto", "ray", "local"] = "auto"

    _LATER_KEYS: ClassVar[dict] = {"elbow_search": "independent"}

    @model_validator(mode="after")
    def _range(self) -> "ClusteringConfig":
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be >= k_min ({self.k_min})")
        return self


class PruneConfig(_Strict):
    # Magnitude pruning of every conv/deconv weight while the CAE trains (paper, Sec. III-A):
    # the final share of zeros, reached by a cubic ramp over the first 60% of the epochs. An
    # encoder that CAE-Net trains on (caenet.encoder: finetune) keeps these zeros.
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
    # Hinton et al.'s usual range (2-5); untuned. The paper's own choice, T 10 / alpha 0.1, is in
    # configs/*_paper.yaml; the shipped configs turn KD off (alpha 0): labels alone did better in both CIFAR
    # studies (docs/ablation.md, configs/studies/cifar10_defaults.yaml)
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)  # weight of the soft-target term; untuned (both shipped configs set 0)


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
    # The one timing protocol (suite/timing.py): warm-up, then windows alternating between the
    # models, until every p50's 95% interval is within ci_share of it (or max_windows).
    threads: int = Field(default=1, ge=1)
    warmup: int = Field(default=20, ge=0)  # calls per model before the first window
    windows: int = Field(default=5, ge=2)  # timed windows per model, at least (a speed-up's pairs)
    window_queries: int = Field(default=60, ge=1)  # calls per window, at least ...
    window_seconds: float = Field(default=0.0, ge=0)  # ... and at least this long
    max_windows: int = Field(default=20, ge=2)  # more windows while an interval is wider than ci_share
    ci_share: float = Field(default=0.02, ge=0, lt=1)  # early stop: p50's 95% half-width under this share of it
    fold_batchnorm: bool = True  # fold BN into convs for inference, as an exporter would

    @model_validator(mode="after")
    def _enough_windows(self) -> "LatencyConfig":
        if self.max_windows < self.windows:
            raise ValueError(f"max_windows ({self.max_windows}) must be >= windows ({self.windows})")
        return self


class EvaluateConfig(_Strict):
    latency: LatencyConfig = LatencyConfig()
    batch_size: int = Field(default=256, ge=1)


class MethodEntry(_Strict):
    """One competitor row of Table I / II (``caenet compare``), as the config file states it.

    The keys every row has are checked here; the rest belong to its ``kind``, whose class
    (``suite.methods.base.MethodParams``, one module per kind in ``suite/methods/``) replaces
    this entry when ``suite.experiment`` checks the config, and validates them then.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field(min_length=1)  # the row's label, e.g. "AlexNet-KD"
    kind: str  # no default: it names the method's class, and is part of every cache key
    of: str = "baseline"  # the model this method compresses: baseline, caenet or an earlier method's name
    train: TrainConfig | None = None  # null: compare.train (from scratch) or compare.finetune (after compressing)
    # the seeds of compare.seeds this row is trained at (null: all); not part of its cache key
    seeds: list[int] | None = None

    def smoke(self) -> "MethodEntry":
        """This row shrunk for ``smoke: true``; a kind with settings to shrink overrides it."""
        return self


class SizeLatencyEntry(_Strict):
    """A network shown for its size and batch-1 latency only (``compare.size_and_latency``): built
    from the model registry and never trained here. Dense latency depends on the architecture,
    not on the weights' values, so these rows need no training; the larger networks, which 2 CPU
    cores cannot train to anything worth a row of Table I, are shown this way."""

    name: str = Field(min_length=1)  # the row's label, e.g. "VGG16-pruned (0.4)"
    model: str = Field(min_length=1)  # an architecture of the model registry
    model_kwargs: dict = {}
    prune: float | None = Field(default=None, gt=0, lt=1)  # remove this share of channels, as kind channel_prune does


class CompareConfig(_Strict):
    # The rows besides the baseline and CAE-Net, in order; 'of' may name an earlier row.
    # Each entry is parsed as the class its 'kind' names (``suite.methods``) by ``suite.experiment``.
    methods: list[SerializeAsAny[MethodEntry]] = []
    train: TrainConfig = TrainConfig(epochs=10, augment=True)  # architectures trained from scratch
    finetune: TrainConfig = TrainConfig(epochs=3, optimizer="adam", lr=5e-4, weight_decay=0.0, schedule="cosine")
    slo_ms: float | None = Field(default=None, gt=0)  # batch-1 p50 on this machine; drawn in Fig. 1
    calibration_images: int = Field(default=256, ge=8)  # int8: training images that fix activation ranges
    branchy_tolerance: float = Field(default=0.01, ge=0, lt=1)  # accuracy BranchyNet's exits may give up on val
    # data.seed of each repetition (split, initialisation, order): every row is trained at
    # each and reported as mean ± std with a paired interval of its gap to the baseline; empty:
    # data.seed alone. `caenet compare --seeds 0 1 2` sets it.
    seeds: list[int] = []
    # Networks timed and sized but not trained (SizeLatencyEntry): their own table under Table I / II.
    size_and_latency: list[SizeLatencyEntry] = []

    @model_validator(mode="after")
    def _unique_names(self) -> "CompareConfig":
        seen = {"baseline", "caenet"}
        for m in [*self.methods, *self.size_and_latency]:
            if m.name in seen:
                raise ValueError(f"method name {m.name!r} is used twice (or is reserved)")
            seen.add(m.name)
        rows = {m.name: m for m in self.methods}
        for m in self.methods:  # a row compresses its 'of' at each of its seeds: that row must be trained there
            of = rows.get(m.of)
            if of is None or of.seeds is None:
                continue
            missing = sorted(set(m.seeds) - set(of.seeds)) if m.seeds is not None else None
            if m.seeds is None or missing:
                raise ValueError(f"method {m.name!r} is of {m.of!r}, which is trained at seeds {of.seeds} only: give "
                                 f"{m.name!r} `seeds: {of.seeds}` (or fewer)" + (f"; it asks for {missing}" if missing else ""))
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds: {self.seeds} must be distinct non-negative integers")
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
    min_free_mb: float = Field(default=200, ge=0)  # the run stops before any stage with less free on cache_dir's disk
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
        latency = cfg.evaluate.latency
        latency.warmup, latency.window_queries = min(latency.warmup, 3), min(latency.window_queries, 4)
        latency.window_seconds = 0.0
        latency.max_windows = latency.windows
        return cfg


