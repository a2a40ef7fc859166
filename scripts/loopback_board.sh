#!/usr/bin/env bash
# A stand-in edge board on this machine: an OpenSSH server on 127.0.0.1 with its own host
# key and user key, plus a boards file for `caenet edge bench` that points at it.
#
#   scripts/loopback_board.sh start /tmp/board     # prints the port; writes /tmp/board/boards.yaml
#   scripts/loopback_board.sh start /tmp/b2 onnx onnxruntime 2   # optional: NAME RUNTIME THREADS
#   caenet edge bench configs/mnist_lenet.yaml --boards /tmp/board/boards.yaml
#   scripts/loopback_board.sh stop /tmp/board
#
# Needs openssh-server (scripts/setup.sh installs it where apt and root are available). The
# board's Python is this checkout's .venv (it has torch); its power source is `none`, so
# energy is reported N/A. Keep DIR short: it holds the sshd's files.
set -euo pipefail
action=${1:?usage: $0 start|stop DIR [NAME RUNTIME THREADS]}
dir=${2:?usage: $0 start|stop DIR [NAME RUNTIME THREADS]}
name=${3:-loopback}
runtime=${4:-torch}
threads=${5:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
sshd=$(command -v sshd || echo /usr/sbin/sshd)
case "$action" in
  start)
    [ -x "$sshd" ] || { echo "loopback_board: no sshd; install openssh-server" >&2; exit 2; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    for key in host user; do
      [ -f "$dir/$key" ] || ssh-keygen -q -t ed25519 -N '' -C "caenet-$key" -f "$dir/$key"
    done
    cp "$dir/user.pub" "$dir/authorized_keys"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    [ "$(id -u)" = 0 ] && mkdir -p /run/sshd   # privilege separation directory
    "$sshd" -f /dev/null -E "$dir/sshd.log" -o "HostKey=$dir/host" -o "Port=$port" -o ListenAddress=127.0.0.1 \
      -o "AuthorizedKeysFile=$dir/authorized_keys" -o PasswordAuthentication=no -o UsePAM=no -o StrictModes=no \
      -o PermitRootLogin=prohibit-password -o "PidFile=$dir/sshd.pid" -o "Subsystem=sftp internal-sftp"
    for _ in $(seq 50); do   # until it accepts connections
      python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null && break
      sleep 0.2
    done
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host.pub")" > "$dir/known_hosts"
    echo "$port" > "$dir/port"
    cat > "$dir/boards.yaml" <<YAML
# written by scripts/loopback_board.sh: this machine as a generic-linux board
boards:
  - name: $name
    host: 127.0.0.1
    port: $port
    user: $(id -un)
    key_file: $dir/user
    known_hosts: $dir/known_hosts
    kind: generic-linux
    python: $root/.venv/bin/python
    runtime: $runtime
    threads: $threads
    workdir: $dir/work
    power: {kind: none}
bench: {windows: 5, window_queries: 200, window_seconds: 1}
YAML
    echo "$port"
    ;;
  stop)
    [ -f "$dir/sshd.pid" ] && kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
    rm -f "$dir/sshd.pid"
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
