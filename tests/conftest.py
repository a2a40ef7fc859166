"""Shared fixtures: the real offline datasets, at tiny scale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _data_root() -> Path:
    env = os.environ.get("CAENET_DATA")
    return Path(env.split(":")[0]) if env else SHARED_DATA


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.fail(f"offline datasets not found at {root}; set CAENET_DATA")
    return root


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the tests that train (ray.init costs ~15 s)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()
