"""``caenet``: the command line of the suite.

  caenet run CONFIG [--set key=value ...]   run (or resume) the CAE-Net pipeline (--dry-run: what is cached, what would run)
  caenet sweep SWEEP [--set key=value ...]  Ray Tune sweep + latency-SLO search
  caenet study STUDY [--set key=value ...]  ablation study: variants x seeds, one table of mean ± std
  caenet compare CONFIG                     CAE-Net vs every competitor of Tables I/II on this machine
  caenet export CONFIG_OR_RUN               TorchScript / ONNX exports, checked against PyTorch
  caenet edge bench CONFIG_OR_RUN --boards  latency and energy on edge boards over SSH
  caenet report CONFIG_OR_RUN               Tables I/II, Fig. 1 and Fig. 5 from the measurements
  caenet runs                               recent pipeline runs from MLflow: accuracy, speed-up, status
  caenet cache [clean]                      disk used per dataset and stage; remove stale and unreferenced stages
  caenet data check [DATASET ...]           verify datasets on disk
  caenet models                             list the registered architectures
  caenet methods                            list the competitor methods of compare.methods

``-v`` (anywhere on the line) shows Ray's worker output on the console too.

Each command is a module of ``suite/commands/``; this module builds the parser from them and
gives every command the same error handling: a ``UserError`` is one line (exit 2), Ctrl-C
keeps finished stages (exit 130), anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback

from suite import __version__, commands
from suite.commands import catalog
from suite.console import lines_through_bars
from suite.errors import INTERRUPTED, ON_STOP, UserError, no_space, signal_handlers


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the full sub-parser of the command ``argv`` names (every command's,
    when ``argv`` is None); the others are listed by their help line only."""
    parser = argparse.ArgumentParser(prog="caenet", description="CAE-Net experiment suite: converting-autoencoder "
                                     "classifiers for edge boards, on Ray with MLflow tracking. "
                                     "`caenet COMMAND --help` explains each command.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of user errors too (same as CAENET_DEBUG=1)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the output of Ray's workers and daemons here too (by default it goes to Ray's log "
                        "folder, printed once; same as CAENET_VERBOSE=1); anywhere on the command line")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), None)
    for name, text in catalog().items():
        if argv is None or name == chosen:
            commands.load(name).add_parser(sub)
        else:
            sub.add_parser(name, help=text)
    return parser


def _on_sigint(signum, frame):
    """Ctrl-C: mark the run interrupted (stage threads then end their MLflow runs KILLED, not
    FAILED, when Ray's shutdown breaks their calls), then interrupt as Python would. Only once:
    a second Ctrl-C (or the terminal's, sent to the whole process group) while the run winds
    down would interrupt its clean-up (ending the MLflow runs) and print that as a traceback."""
    if INTERRUPTED.is_set():
        return
    INTERRUPTED.set()
    raise KeyboardInterrupt


def _quiet_after_interrupt(hook):
    """A thread's (or an unraisable) exception while the run winds down after Ctrl-C is a
    consequence of the interrupt (Ray gone under a training, a store closed under a stage
    thread): the one interrupted line says it all. Before Ctrl-C, Python's hook as ever."""

    def quiet(info):
        if not INTERRUPTED.is_set():
            hook(info)

    return quiet


def _on_sigterm(signum, frame):
    """SIGTERM (``ray job stop`` sends it to a job's entrypoint and SIGKILLs it 3 s later): as
    Ctrl-C, but the MLflow runs are ended KILLED first (``ON_STOP``), before Ray's shutdown."""
    INTERRUPTED.set()
    for stop in list(ON_STOP):
        try:
            stop()
        except Exception:  # a store that does not answer: the next run ends what is left
            pass
    raise KeyboardInterrupt


VERBOSE = ("-v", "--verbose")


def main(argv: list[str] | None = None) -> int:
    """Run one ``caenet`` command line; its exit code. Ctrl-C and SIGTERM are this command's
    while it runs (and the process's own handlers again after it: tests and jobs call it too)."""
    argv = sys.argv[1:] if argv is None else argv
    # -v anywhere (`caenet run CONFIG -v`, and the jobs, which put the command first)
    argv = [a for a in argv if a in VERBOSE] + [a for a in argv if a not in VERBOSE]
    debug = "--debug" in argv or os.environ.get("CAENET_DEBUG") == "1"
    if threading.current_thread() is not threading.main_thread():
        return _run(argv, debug)
    # first: building the parser imports torch (seconds), and Ctrl-C there is one line too
    INTERRUPTED.clear()
    handlers = {signal.SIGTERM: _on_sigterm}
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # `nohup`, a shell's `&`: Ctrl-C stays ignored
        handlers[signal.SIGINT] = _on_sigint
    hooks = threading.excepthook, sys.unraisablehook
    threading.excepthook = _quiet_after_interrupt(threading.__excepthook__)
    sys.unraisablehook = _quiet_after_interrupt(sys.__unraisablehook__)
    try:
        with signal_handlers(handlers):
            return _run(argv, debug)
    finally:
        threading.excepthook, sys.unraisablehook = hooks


_PROGRAM = {"running": False}  # main() runs as the caenet program (entry), not inside another program


def _quiet_from_now() -> None:
    """Nothing more on this process's console: after Ctrl-C, Ray's core (C++, writing to the file
    descriptors themselves) logs what its shutdown interrupted, e.g. "task_manager.cc: Failed to
    push error to driver", below the resume line."""
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)


def entry(argv: list[str] | None = None) -> int:
    """The ``caenet`` program (and the jobs): ``main``, then a Ctrl-C while Python and Ray shut
    down leaves at once and quietly, instead of a traceback from an exit handler."""
    _PROGRAM["running"] = True
    code = main(argv)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_late_sigint)
    return code


def _on_late_sigint(signum, frame):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _run(argv: list[str], debug: bool) -> int:
    try:
        args = build_parser(argv).parse_args(argv)
        if args.verbose:  # the environment, so that `ray job submit` drivers and subprocesses see it too
            os.environ["CAENET_VERBOSE"] = "1"
        with lines_through_bars():  # on a terminal: no printed line cut in two by a progress bar
            return args.func(args)
    except SystemExit:  # argparse's --help and usage errors
        raise
    except BaseException as exc:
        if INTERRUPTED.is_set() or isinstance(exc, KeyboardInterrupt):  # Ctrl-C, whatever it broke on the way out
            print("caenet: interrupted; finished stages are kept, run the same command again to resume", file=sys.stderr)
            if _PROGRAM["running"]:  # the last line: Ray's core, shutting down, logs straight to the terminal
                _quiet_from_now()
            _exit_now(130)
            return 130
        # one handler for every command: a new command gets it for free
        line = str(exc) if isinstance(exc, UserError) else no_space(exc) if isinstance(exc, OSError) else None
        if line is None:  # a bug: its traceback
            raise
        if debug:
            traceback.print_exc()
        print(f"caenet: error: {line}", file=sys.stderr)  # a full disk: one line too (no retry helps)
        return 2


def _exit_now(code: int, grace_s: float = 2.0) -> None:
    """Leave promptly after Ctrl-C. The run's MLflow runs are closed (KILLED) by now and Ray's
    shutdown is queued, but a stage thread can be stuck in a Ray call that never returns once
    Ray is gone, and the interpreter would wait for it forever at exit: give the threads a
    moment, then go (Ray's reaper ends a local Ray with this process)."""
    deadline = time.monotonic() + grace_s
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() and not t.daemon and t is not threading.current_thread() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(entry())
