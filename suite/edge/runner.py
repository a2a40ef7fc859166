"""Board-side benchmark runner: copied to each board and run there with the board's Python.

Self-contained on purpose (standard library, numpy, and torch or onnxruntime only): boards do
not have this suite installed; bench.py copies ``power_sources/`` beside it. Reads ``spec.json``,
writes ``result.json``:

1. fixes the thread count, records the CPU governor, frequency and temperature where exposed;
2. starts the power sampler (the spec's ``power.kind``, if it samples on the board) and records
   an idle window;
3. loads every exported model and times batch-1 inferences on real test images under the
   suite's one protocol (``timing.py``, copied beside this file: warm-up, windows alternating
   between the models until each p50 is known to ``ci_share``); each model's statistics with
   their 95% intervals, and each window's wall-clock span, are kept;
4. stops the sampler and writes the raw power readings; the controller turns them into
   energy with the same source's ``samples`` (``suite.edge.power_sources``).
"""

import argparse
import contextlib
import glob
import importlib
import json
import os
import platform
import sys
import threading
import time

# On the controller this is suite.edge.runner; on the board, bench.py copies the package next to this file.
power_sources = importlib.import_module(".power_sources" if __package__ else "power_sources", __package__ or None)
# the one timing protocol: suite/timing.py, copied beside this file on the board
timing = importlib.import_module("suite.timing" if __package__ else "timing")

read = power_sources.read


def system_info():
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        t, kind = read(zone + "/temp"), read(zone + "/type")
        if t and t.lstrip("-").isdigit():
            temps[kind or os.path.basename(zone)] = int(t) / 1000.0
    return {
        "machine": platform.machine(), "kernel": platform.release(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "governor": read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_khz": read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"), "temperatures_c": temps,
        "model": read("/proc/device-tree/model") or read("/sys/firmware/devicetree/base/model"),
    }


class Sampler:
    """Raw power readings in a background thread: (epoch seconds, reading) from the spec's source."""

    def __init__(self, power):
        self.source = power_sources.get(power.get("kind", "none")).from_dict(power)
        self.kind, self.active = self.source.kind, self.source.on_board
        self.readings, self.error = [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        if self.active:
            self._thread.start()

    def _run(self):
        try:
            with contextlib.closing(self.source.sample(self._stop)) as readings:
                for reading in readings:
                    self.readings.append((time.time(), reading))
                    if self._stop.is_set():
                        break
        except Exception as exc:  # the benchmark goes on; energy is N/A with this reason
            self.error = f"{self.kind}: {exc}"

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def load(model, runtime, threads):
    path = model["file"]
    if runtime == "onnxruntime":
        import onnxruntime as ort  # deferred: on the board, only the runtime it uses is installed

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    import torch  # deferred: on the board, only the runtime it uses is installed

    torch.set_num_threads(threads)
    net = torch.jit.load(path, map_location="cpu").eval()

    def call(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return call


def main():
    parser = argparse.ArgumentParser(description="caenet board-side benchmark runner")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    import numpy as np  # deferred: on the board, only the runtime it uses is installed

    runtime, threads = spec["runtime"], spec["threads"]
    os.environ["OMP_NUM_THREADS"] = str(threads)
    result = {"system": system_info(), "runtime": runtime, "threads": threads, "windows": [], "models": {}}
    if runtime == "onnxruntime":
        import onnxruntime  # deferred: on the board, only the runtime it uses is installed

        result["runtime_version"] = onnxruntime.__version__
    else:
        import torch  # deferred: on the board, only the runtime it uses is installed

        result["runtime_version"] = torch.__version__
    models = {m["name"]: load(m, runtime, threads) for m in spec["models"]}
    # Each model's own inputs: test images, or for a classifier alone the encoder's outputs.
    feeds = {m["name"]: np.load(m["inputs"]).astype(np.float32) for m in spec["models"]}
    sampler = Sampler(spec.get("power", {}))
    sampler.start()
    idle_s = float(sampler.source.idle_seconds) if sampler.active else 0.0
    t0 = time.time()
    time.sleep(idle_s)
    result["idle_window"] = [t0, time.time()]
    def caller(name, call):
        inputs, n = feeds[name], len(feeds[name])
        return lambda i: call(inputs[i % n : i % n + 1])

    def window(name, index, start, end, calls):  # energy is read over the same windows
        result["windows"].append({"model": name, "round": index, "start": start, "end": end, "inferences": calls})

    stats = timing.measure({name: caller(name, call) for name, call in models.items()},
                           timing.Protocol(**spec["protocol"]), on_window=window)
    result["models"] = stats
    sampler.stop()
    result["power"] = {"kind": sampler.kind, "error": sampler.error, "readings": sampler.readings}
    result["system_after"] = system_info()
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(json.dumps({"ok": True, "models": list(models), "windows": len(result["windows"])}))


if __name__ == "__main__":
    sys.exit(main())
