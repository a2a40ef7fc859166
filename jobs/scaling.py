"""Entry point for ``ray job submit``: training throughput of the config's baseline, plain PyTorch
vs Ray Train at several worker counts, on the cluster's CPUs or GPUs.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/scaling.py --config configs/cifar10_alexnet.yaml --workers 1 2 4 8 --set runtime.use_gpu=yes

Same arguments as ``benchmarks/train_throughput.py`` (``--help`` lists them).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the working_dir copy of the suite
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_throughput import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
