"""Whether a run trains on GPUs: decided once, when its Ray session opens, before any stage.

``runtime.use_gpu``:

- ``auto``: GPUs when the cluster has, or its autoscaler can add, enough for one training
  (``workers x gpus_per_worker``), and CUDA works where one is reserved. An autoscaling
  cluster starts with no GPU node (``cluster.yaml``), so counting only the GPUs up *now*
  would train on CPUs and bring GPU nodes up only to lend their CPUs.
- ``yes``: the same, but a cluster that can never give a training its GPUs, or a GPU where
  CUDA does not work (a driver too old for the torch wheel), stops the run in one line. Before
  this, a task asking for a GPU that no node has waited for ever.
- ``no``: CPUs.

The decision is made from a ``GpuCluster`` (what is up, what the autoscaler can add, whether
CUDA works on a reserved GPU), so that the rule is tested against fake cluster descriptions.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import ray
import torch
import yaml

from suite.config import RuntimeConfig
from suite.errors import ConfigError

# Where `ray up` leaves the autoscaler's config on the head (the drivers of `ray job submit`
# run there); its node types say which GPUs the cluster can add. Settable for other layouts.
AUTOSCALER_CONFIG_ENV = "CAENET_AUTOSCALER_CONFIG"
AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"
PROBE_TIMEOUT_S = 60.0


class GpuError(ConfigError):
    """``runtime.use_gpu: yes`` where no training can get a working GPU."""


@dataclass(frozen=True)
class GpuCluster:
    up: float  # GPUs of the nodes up now
    can_add: float  # GPUs the autoscaler can still add (0 for a fixed or local cluster)
    cuda: str | None = None  # why CUDA does not work where a GPU was reserved; None: it works, or not probed
    where: str = "this machine"  # for messages


def needed(runtime: RuntimeConfig) -> float:
    """GPUs one training holds."""
    return runtime.workers * runtime.gpus_per_worker


def decide(runtime: RuntimeConfig, cluster: GpuCluster) -> bool:
    """Train on GPUs? Raises ``GpuError`` for ``yes`` when that cannot work."""
    if runtime.use_gpu == "no":
        return False
    enough = cluster.up + cluster.can_add >= needed(runtime)
    if runtime.use_gpu == "auto":
        return enough and cluster.cuda is None
    if not enough:
        more = f" and its autoscaler can add {cluster.can_add:g}" if cluster.can_add else ""
        raise GpuError(f"runtime.use_gpu is yes, but {cluster.where} has {cluster.up:g} GPU(s){more}, and a training needs "
                       f"{needed(runtime):g} (runtime.workers x runtime.gpus_per_worker): run it where GPUs are, or set "
                       f"runtime.use_gpu=auto (GPU where there is one) or no")
    if cluster.cuda is not None:
        raise GpuError(f"runtime.use_gpu is yes, but CUDA does not work on {cluster.where}: {cluster.cuda}; install an NVIDIA "
                       f"driver that supports CUDA {torch.version.cuda or '?'} (the torch wheel's), or set runtime.use_gpu=no")
    return True


def autoscaler_gpus(config: dict) -> float:
    """GPUs the autoscaler can add: each worker node type's GPUs x its ``max_workers``."""
    head = config.get("head_node_type")
    total = 0.0
    for name, node in (config.get("available_node_types") or {}).items():
        if name == head:
            continue
        gpus = float((node.get("resources") or {}).get("GPU", 0))
        total += gpus * int(node.get("max_workers", config.get("max_workers", 0)) or 0)
    return total


def _autoscaler_config() -> dict:
    path = Path(os.environ.get(AUTOSCALER_CONFIG_ENV, AUTOSCALER_CONFIG)).expanduser()
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}  # no autoscaler here (a local or fixed cluster)


def cuda_problem() -> str | None:
    """Why CUDA does not work in this process, or None where it does. ``is_available`` is False
    for a driver too old for the wheel; it makes no CUDA context (which would hold GPU memory
    in the driver's process all run long)."""
    if torch.cuda.is_available():
        return None
    return f"torch {torch.__version__} sees no usable CUDA device (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"


def _probe() -> tuple[str, str | None]:
    return socket.gethostname(), cuda_problem()


def describe(runtime: RuntimeConfig, joined: bool, probe: bool = True) -> GpuCluster:
    """What this run can get. ``joined``: Ray is up (a cluster, or a Tune trial's own
    session); otherwise a local Ray that will start on this machine. ``probe``: where a GPU
    is up, check that CUDA works on one (a task that reserves it)."""
    if runtime.use_gpu == "no":
        return GpuCluster(0.0, 0.0)
    if not joined:
        count = float(torch.cuda.device_count())
        return GpuCluster(count, 0.0, cuda_problem() if count else None)
    up = float(ray.cluster_resources().get("GPU", 0))
    cluster = GpuCluster(up, autoscaler_gpus(_autoscaler_config()), where="this Ray cluster")
    if runtime.use_gpu == "no" or not up or not probe:
        return cluster
    # A GPU is up: ask one that Ray reserves whether CUDA works there (a driver too old for the
    # wheel reserves fine and trains on nothing). A GPU only the autoscaler can add is not
    # started for this: each training's own process checks again (``check_reserved``).
    probe = ray.remote(_probe).options(num_gpus=min(1.0, runtime.gpus_per_worker), num_cpus=0, max_retries=0)
    try:
        host, problem = ray.get(probe.remote(), timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        return cluster  # every GPU busy (another run): the trainings check for themselves
    return GpuCluster(up, cluster.can_add, problem, where=f"node {host}" if problem else cluster.where)


def preflight(runtime: RuntimeConfig) -> None:
    """Before a command starts anything: a local run (no ``$RAY_ADDRESS``) that says ``yes``
    on a machine where no GPU works stops here. Cheap (no Ray); the session decides again as
    it opens, for clusters too."""
    if runtime.use_gpu == "yes" and not os.environ.get("RAY_ADDRESS"):
        decide(runtime, describe(runtime, joined=False))


def check_reserved() -> None:
    """In a training's process: Ray reserved a GPU for it, so CUDA must work here (else the
    training would quietly run on the CPU). One line, not retried."""
    if ray.get_gpu_ids() and (problem := cuda_problem()):
        raise GpuError(f"runtime.use_gpu: Ray reserved GPU {ray.get_gpu_ids()} on {socket.gethostname()}, but CUDA does not "
                       f"work there: {problem}; install a driver for CUDA {torch.version.cuda or '?'} or set runtime.use_gpu=no")


def device() -> torch.device:
    """This process's training device: its (first) visible GPU where Ray reserved one, else the CPU.
    With an explicit index: code that moves tensors compares devices, and ``cuda`` alone is not ``cuda:0``."""
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
