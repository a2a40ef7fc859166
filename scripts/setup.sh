#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with this package and its test tools,
# and the Fashion-MNIST Debian package where apt is available. Safe to run every time:
# it only installs when pyproject.toml changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.caenet-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install -q --no-compile --upgrade pip
  # torch/torchvision first, pinned to the wheels on this machine's disk (pip finds them;
  # a newer release would download several GB of CUDA libraries instead).
  .venv/bin/pip install -q --no-compile "torch==2.14.1" "torchvision==0.29.1" || .venv/bin/pip install -q --no-compile "torch<=2.14.1" "torchvision<=0.29.1"
  .venv/bin/pip install -q --no-compile -e ".[test]"
  echo "$want" > "$stamp"
fi
# Bytecode for every installed module, once per install. Where PYTHONDONTWRITEBYTECODE is set (as
# on these machines) Python never caches what it compiles: each process, every Ray worker
# included, compiled torch, Ray and MLflow from source again, 9 of the smoke run's 48 s
# (measured with cProfile: builtins.compile). Python still reads bytecode that exists.
compiled=.venv/.caenet-compiled
if [ ! -f "$compiled" ] || [ "$(cat "$compiled")" != "$want" ]; then
  # a few files of some packages are templates, not Python: their errors are expected
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
  echo "$want" > "$compiled"
fi
.venv/bin/python -m compileall -q suite >/dev/null  # the suite's own modules, as they change
# Fashion-MNIST ships as a Debian package; optional (its tests skip without it).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "setup: could not install dataset-fashion-mnist (its tests will skip)" >&2
fi
# OpenSSH server: the edge tests run `caenet edge bench` against a real sshd on 127.0.0.1.
if [ ! -x /usr/sbin/sshd ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq openssh-server) >/dev/null 2>&1 \
    || echo "setup: could not install openssh-server (the edge tests need /usr/sbin/sshd)" >&2
fi
# tmux: tests/test_terminal.py reads the main job's screen on a real terminal.
if ! command -v tmux >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq tmux) >/dev/null 2>&1 \
    || echo "setup: could not install tmux (the terminal test will skip)" >&2
fi
# The offline datasets beside the checkout, when this machine has them.
if [ -z "${CAENET_DATA:-}" ] && [ -d ../shared/data ]; then
  echo "setup: datasets from $(cd ../shared/data && pwd)"
fi
