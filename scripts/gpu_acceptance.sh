#!/usr/bin/env bash
# The GPU acceptance run, one command on one CUDA machine (an H100: about 8 minutes):
#   1. tests/test_cuda.py: every model, the training recipe and a checkpoint round trip on the GPU;
#   2. the MNIST main job with --profile gpu (the trainings and the CAE on the GPU, a quarter
#      GPU per one-worker training);
#   3. the CIFAR-10 pipeline with --profile gpu;
#   4. the strong-scaling study (configs/studies/scaling_workers.yaml) at smoke size on the GPU.
# It writes docs/results/gpu_acceptance.json: the device, each step's wall time and exit code,
# and the pipelines' accuracies and speed-ups (from their summary.json). On a machine without a
# CUDA GPU it says so in one line and exits 2. Usage: bash scripts/gpu_acceptance.sh [OUT_JSON]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "gpu_acceptance: no .venv here; run bash scripts/setup.sh first" >&2; exit 2; }
device=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null)
if [ -z "$device" ]; then
  echo "gpu_acceptance: no CUDA GPU on this machine (torch.cuda.is_available() is False); run it where one is" >&2
  exit 2
fi
out=${1:-docs/results/gpu_acceptance.json}
work=$(mktemp -d /tmp/gpu-acceptance.XXXXXX)
export CAENET_DATA=${CAENET_DATA:-$(cd .. && pwd)/shared/data} RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
cache="--set runtime.cache_dir=$work/artifacts --set runtime.tracking_uri=sqlite:///$work/mlflow.db"
steps=()
step() {  # step NAME COMMAND...: run it, note its wall time and exit code
  local name=$1; shift
  echo "== $name: $*"
  local t0=$(date +%s%N)
  "$@"
  local rc=$?
  steps+=("$name $rc $(( ($(date +%s%N) - t0) / 1000000 ))")
}
step cuda_tests "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
step mnist_main_job .venv/bin/caenet run configs/mnist_lenet.yaml --profile gpu $cache --summary "$work/mnist.json"
step cifar10_pipeline .venv/bin/caenet run configs/cifar10_alexnet.yaml --profile gpu $cache --summary "$work/cifar10.json"
step scaling_workers .venv/bin/caenet study configs/studies/scaling_workers.yaml --smoke --profile gpu $cache --out "$work/scaling"
"$PY" - "$out" "$device" "$work" "${steps[@]}" <<'PY'
import json, sys, time
from pathlib import Path

out, device, work, *steps = sys.argv[1:]
result = {"device": device, "date": time.strftime("%Y-%m-%d"), "steps": {}}
for line in steps:
    name, rc, ms = line.split()
    result["steps"][name] = {"exit_code": int(rc), "wall_s": round(int(ms) / 1000, 1)}
for name in ("mnist", "cifar10"):
    path = Path(work) / f"{name}.json"
    if path.is_file():
        s = json.loads(path.read_text())
        result[name] = {k: s.get(k) for k in ("speedup_p50", "speedup_p50_onnxruntime")}
        result[name].update({f"{m}_test_acc": s[m]["test_acc"] for m in ("baseline", "caenet")})
Path(out).write_text(json.dumps(result, indent=2) + "\n")
print(f"gpu_acceptance: {out}: " + ", ".join(f"{k} rc {v['exit_code']} in {v['wall_s']} s" for k, v in result["steps"].items()))
sys.exit(max(v["exit_code"] for v in result["steps"].values()) and 1)
PY
