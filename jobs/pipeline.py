"""Entry point for ``ray job submit``: run the CAE-Net pipeline on the cluster.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/pipeline.py configs/mnist_lenet.yaml --set runtime.workers=2

Same arguments as ``caenet run`` (``--help`` lists them). Inside a job, Ray's address comes
from the job's environment, so every training joins the cluster's workers; MLflow logs to
``runtime.tracking_uri`` or ``$MLFLOW_TRACKING_URI`` (use a server or a shared path on a
multi-node cluster).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working_dir copy of the suite

from suite.cli import entry  # noqa: E402

if __name__ == "__main__":
    sys.exit(entry(["run", *sys.argv[1:]]))
