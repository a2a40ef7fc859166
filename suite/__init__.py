"""caenet-suite: CAE-Net as a Ray + MLflow experiment suite."""

import os

# No Ray API call may start a Ray of its own: after Ctrl-C (or any end of a session) a
# background thread that touched Ray would otherwise start a fresh local cluster and keep
# training in it. Sessions are opened explicitly (suite.distributed.ray_runtime.ray_session).
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")

try:  # the installed package's version (pyproject.toml); a bare checkout says so
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    __version__ = _version("caenet-suite")
except PackageNotFoundError:
    __version__ = "0+unknown (not installed)"
