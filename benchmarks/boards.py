"""Time a board visit costs outside its timed windows, and the measurement cache's hit rate.

    .venv/bin/python benchmarks/boards.py                     # a loopback board on this machine
    .venv/bin/python benchmarks/boards.py --boards my.yaml    # real boards (the sweep's path)

The sweep's path exactly (``suite.edge.pool``: one Ray actor per board, one architecture per
visit beside the baseline, the measurement cache): a few MNIST architectures are timed on every
board twice, into a fresh cache. The first pass prints, per model per board, the seconds spent
outside the timed windows (export here, then connect, push, start the runner, warm-up, fetch,
clean-up; the goal: at most 2 s); the second pass should measure nothing (hit rate 100%).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import ray
import torch

from suite.edge.boards import load_inventory
from suite.edge.pool import BoardPool
from suite.data import INFO
from suite.models import create_model, geometry
from suite.pipeline.latency_cache import LatencyCache

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURES = {"caenet-64": ["caenet", {"hidden": 64}], "caenet-128": ["caenet", {"hidden": 128}],
                 "caenet-256": ["caenet", {"hidden": 256}]}
BENCH = "bench: {warmup: 10, windows: 5, window_queries: 50, window_seconds: 0, max_windows: 5}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", help="boards file (default: a loopback board started here)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bb", dir="/tmp"))
    script = str(REPO / "scripts" / "loopback_board.sh")
    path = args.boards
    if path is None:
        subprocess.run([script, "start", str(tmp / "board")], check=True, capture_output=True)
        text = (tmp / "board" / "boards.yaml").read_text()
        path = tmp / "boards.yaml"
        path.write_text(text[: text.index("bench:")] + BENCH)
    try:
        inventory = load_inventory(path)
        torch.manual_seed(0)
        shape = geometry(INFO["mnist"])
        models = {"baseline": create_model("lenet", **shape).eval(),
                  **{k: create_model(n, **shape, **kw).eval() for k, (n, kw) in ARCHITECTURES.items()}}
        images = torch.rand(inventory.bench.images, 1, 28, 28)
        cache = LatencyCache(tmp / "latency")
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        pool = BoardPool(inventory)
        try:
            for attempt in ("first pass (empty cache)", "second pass (same boards, same architectures)"):
                t0 = time.perf_counter()
                timings = pool.time_on_boards(models, ARCHITECTURES, images, cache, log=lambda line: None)
                print(f"\n{attempt}: {time.perf_counter() - t0:.1f} s")
                for board, t in timings.items():
                    if t.error:
                        print(f"  {board}: FAILED: {t.error}")
                        continue
                    hits = len(t.timed.cached)
                    print(f"  {board}: cache hit rate {hits}/{len(ARCHITECTURES)} ({100 * hits / len(ARCHITECTURES):.0f}%), "
                          f"{len(t.visits)} visit(s)")
                    models_timed = sum(v["models"] for v in t.visits)
                    if models_timed:
                        outside = sum(v["seconds"] - v["windows_s"] for v in t.visits) + t.export_s
                        print(f"    outside the timed windows: {outside / models_timed:.2f} s per model "
                              f"(export {t.export_s / models_timed:.2f} s; visits {[round(v['seconds'] - v['windows_s'], 2) for v in t.visits]} s, "
                              f"{models_timed // len(t.visits)} models each); goal <= 2 s")
        finally:
            pool.close()
            ray.shutdown()
    finally:
        if args.boards is None:
            subprocess.run([script, "stop", str(tmp / "board")], capture_output=True)


if __name__ == "__main__":
    main()
