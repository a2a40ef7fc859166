"""The ScalingConfig and task options every training gets come from runtime.* and the run's GPU decision."""

import pytest

from suite.config import ConfigError, RuntimeConfig, load_config
from suite.distributed.launch import scaling_config, task_options, uses_ray_train
from suite.training.job import TrainJob


def test_cpu_workers_and_gpu_shares():
    cpu = scaling_config(RuntimeConfig(workers=2, cpus_per_worker=1.5), gpu=False)
    assert cpu.num_workers == 2 and not cpu.use_gpu and cpu.resources_per_worker == {"CPU": 1.5}
    gpu = scaling_config(RuntimeConfig(workers=4, use_gpu="yes"), gpu=True)
    assert gpu.use_gpu and gpu.resources_per_worker == {"CPU": 2, "GPU": 1.0}
    assert RuntimeConfig(cpus_per_worker=1.5).threads() == 2 and RuntimeConfig(cpus_per_worker=1, threads_per_worker=3).threads() == 3


def test_a_gpu_training_gets_a_process_of_its_own():
    """Ray's one-call-per-process default for GPU tasks is lost when the GPU comes through
    .options(): a warm process would keep its CUDA context, and stay on its first GPU when
    handed another. The options themselves are accepted by Ray (max_calls is not, there)."""
    from ray._common.ray_option_utils import validate_task_options

    from suite.distributed.launch import train_task_remote

    assert train_task_remote(True)._default_options["max_calls"] == 1
    assert train_task_remote(False)._default_options.get("max_calls", 0) == 0  # CPU trainings keep warm processes
    job = TrainJob(name="baseline", model="lenet", model_kwargs={}, data={}, train={})
    options = task_options(job, RuntimeConfig(gpus_per_worker=0.25), gpu=True)
    validate_task_options(options, in_options=True)
    assert options["num_gpus"] == 0.25 and task_options(job, RuntimeConfig(), gpu=False)["num_gpus"] == 0


def test_fractional_gpus_only_for_one_worker_trainings():
    RuntimeConfig(workers=1, gpus_per_worker=0.25)  # four small trainings share a GPU
    RuntimeConfig(workers=4, gpus_per_worker=0.5, use_gpu="no")  # no GPU asked for: nothing to refuse
    with pytest.raises(ConfigError, match=r"^configs/mnist_lenet.yaml: runtime: gpus_per_worker 0.5 with workers 4: .*NCCL") as err:
        load_config("configs/mnist_lenet.yaml", ["runtime.workers=4", "runtime.gpus_per_worker=0.5"])
    assert "\n" not in str(err.value)


def test_one_worker_runs_as_a_warm_task_unless_ray_train_is_asked():
    assert not uses_ray_train(RuntimeConfig())  # one worker: a Ray task on a warm worker process
    assert uses_ray_train(RuntimeConfig(workers=2))  # data-parallel: Ray Train
    assert uses_ray_train(RuntimeConfig(trainer="ray-train"))
