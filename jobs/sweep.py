"""Entry point for ``ray job submit``: a Ray Tune sweep and the latency-SLO search on the cluster.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/sweep.py configs/sweeps/cifar10_clusters_pruning.yaml --set max_concurrent_trials=4

Same arguments as ``caenet sweep`` (``--help`` lists them).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working_dir copy of the suite

from suite.cli import entry  # noqa: E402

if __name__ == "__main__":
    sys.exit(entry(["sweep", *sys.argv[1:]]))
