"""scripts/gpu_acceptance.sh: on a machine without a CUDA GPU (this one, CI) it says so in one
line and exits 2, before anything runs or is written."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: run the script itself")
def test_without_a_gpu_it_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_acceptance.sh"), str(out)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == ("gpu_acceptance: no CUDA GPU on this machine (torch.cuda.is_available() is False); "
                                   "run it where one is")
    assert not out.exists()
