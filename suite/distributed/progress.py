"""The driver's view of the trainings running now: one progress bar each, or plain lines.

Workers do not print to the console: their output goes to Ray's log files (``caenet -v``
shows them, with Ray's own). Each training sends its progress to the driver instead, in the
stream of a warm task or through the epoch relay of Ray Train, and the driver shows it here:

- on a terminal, one tqdm bar per running training (epochs x batches, with the loss and
  images/s), and each finished epoch as a line above the bars;
- elsewhere (a log file, ``ray job logs``, CI), the same epoch lines, and a progress line
  inside long epochs at most every ``runtime.progress_every_s``.
"""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm

from suite.training.reports import epoch_line, progress_line

TTY_EVERY_S = 1.0  # how often a worker sends progress when the driver draws bars


def interactive() -> bool:
    """Bars when they would land on a terminal (tqdm draws on stderr, as the stages' bars do)."""
    return sys.stderr.isatty()


def every_s(configured: float) -> float:
    """How often a worker sends progress: often enough to move a bar on a terminal."""
    return min(configured, TTY_EVERY_S) if interactive() else configured


def _line(text: str) -> None:
    """One write per line: stage threads print too, and two writes could interleave."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class _Display:
    """Shared by the stage threads of one driver process (trainings run side by side)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.bars: dict[str, tqdm] = {}

    def _bar(self, name: str, total: int) -> tqdm:
        bar = self.bars.get(name)
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            used = {b.pos for b in self.bars.values() if b is not bar}
            position = next(i for i in range(len(self.bars) + 1) if i not in used and -i not in used)
            # no rate or ETA of tqdm's: the bar is moved to where the worker is, not ticked per batch
            bar = tqdm(total=total, desc=name, position=position, leave=False, dynamic_ncols=True,
                       bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} batches [{elapsed}{postfix}]")
            self.bars[name] = bar
        return bar

    def progress(self, name: str, p: dict) -> None:
        with self.lock:
            if interactive():
                bar = self._bar(name, p["epochs"] * p["steps"])
                bar.n = (p["epoch"] - 1) * p["steps"] + p["step"]
                bar.set_postfix_str(f"epoch {p['epoch']}/{p['epochs']}, loss {p['loss']:.4g}, {p['images_per_second']:.0f} img/s",
                                    refresh=False)
                bar.refresh()
            else:
                _line(progress_line(name, p))

    def epoch(self, name: str, epochs: int, metrics: dict) -> None:
        with self.lock:
            line = epoch_line(name, epochs, metrics)
            if interactive():
                tqdm.write(line)
                bar = self.bars.get(name)
                if bar is not None:
                    bar.n = int(metrics.get("epoch", 0)) * (bar.total // max(epochs, 1))
                    bar.refresh()
            else:
                _line(line)

    def done(self, name: str) -> None:
        with self.lock:
            bar = self.bars.pop(name, None)
            if bar is not None:
                with tqdm.get_lock():
                    bar.close()
                    # tqdm wipes a closed bar below the first by writing blanks on its row and
                    # moving back up, which leaves the cursor at the end of the row it started
                    # on: the next line printed there began in the last column (a row ending in
                    # "[" and the rest on the next row). Back to the row's start.
                    if bar.pos and interactive():
                        bar.fp.write("\r")
                        bar.fp.flush()


display = _Display()
