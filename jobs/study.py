"""Entry point for ``ray job submit``: an ablation study (variants x seeds) on the cluster.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/study.py configs/studies/cifar10.yaml --set runtime.cache_dir=/shared/artifacts

Same arguments as ``caenet study`` (``--help`` lists them). Independent cells train side by
side on the cluster's workers; the table is written beside the cache.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working_dir copy of the suite

from suite.cli import entry  # noqa: E402

if __name__ == "__main__":
    sys.exit(entry(["study", *sys.argv[1:]]))
