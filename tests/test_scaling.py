"""The ScalingConfig every training gets comes from runtime.* (GPU when asked or available)."""

from suite.config import RuntimeConfig
from suite.distributed.training import scaling_config


def test_cpu_fallback_and_gpu_shares():
    cpu = scaling_config(RuntimeConfig(workers=2, cpus_per_worker=1.5))  # no Ray, no GPU: CPU workers
    assert cpu.num_workers == 2 and not cpu.use_gpu and cpu.resources_per_worker == {"CPU": 1.5}
    gpu = scaling_config(RuntimeConfig(workers=4, use_gpu="yes", gpus_per_worker=0.5))
    assert gpu.use_gpu and gpu.resources_per_worker == {"CPU": 2, "GPU": 0.5}
    assert not scaling_config(RuntimeConfig(use_gpu="no")).use_gpu
    assert RuntimeConfig(cpus_per_worker=1.5).threads() == 2 and RuntimeConfig(cpus_per_worker=1, threads_per_worker=3).threads() == 3


def test_one_worker_runs_as_a_warm_task_unless_ray_train_is_asked():
    from suite.distributed.training import uses_ray_train

    assert not uses_ray_train(RuntimeConfig())  # one worker: a Ray task on a warm worker process
    assert uses_ray_train(RuntimeConfig(workers=2))  # data-parallel: Ray Train
    assert uses_ray_train(RuntimeConfig(trainer="ray-train"))
