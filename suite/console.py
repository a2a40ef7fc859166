"""The console while progress bars may be on screen.

tqdm draws its bars on stderr and moves the cursor over them; a plain ``print`` from another
thread (a stage's done line, a warning, Ray's log line) lands in the middle of a bar's line
and cuts it in two (a ``[`` left at the end of the bar, the rest on the next line). On a
terminal, ``lines_through_bars()`` routes stdout through ``tqdm.write``, a whole line at a
time: tqdm lifts the bars, writes the line, and draws them again. Off a terminal (logs, CI,
``ray job logs``) nothing changes.
"""

from __future__ import annotations

import contextlib
import sys
import threading

from tqdm import tqdm


class LineWriter:
    """A stdout that hands tqdm whole lines; each thread keeps its own unfinished line
    (``print`` writes the text and its newline in two calls)."""

    def __init__(self, stream):
        self.stream = stream
        self._pending = threading.local()

    def write(self, text: str) -> int:
        lines = (getattr(self._pending, "text", "") + text).split("\n")
        self._pending.text = lines.pop()
        for line in lines:
            # Not ``tqdm.write(line, file=self.stream)``: tqdm lifts the bars only for a file
            # that is ``sys.stdout`` or the bars' own, and ``sys.stdout`` is this writer now, so
            # the line landed wherever the cursor sat on a bar's row (PITFALLS.md, Terminals).
            with tqdm.external_write_mode(file=self):
                self.stream.write(line + "\n")
                self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def lines_through_bars():
    """Within the block, on a terminal: stdout and the root logger's console lines go through
    tqdm (see above)."""
    if not sys.stderr.isatty() or isinstance(sys.stdout, LineWriter):
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm  # deferred: only on a terminal

    saved, sys.stdout = sys.stdout, LineWriter(sys.stdout)
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        sys.stdout = saved
