"""Plug-in discovery, one way for every registry of the suite (models, datasets, competitor
methods, power sources, commands): a plug-in is a module in its registry's package, and
dropping one in is all it takes. A package lists the modules of its folder that are not
plug-ins in ``HELPERS``; modules whose name starts with ``_`` are never plug-ins.

``discover`` imports every plug-in of a package once per process, thread-safe (stage threads
may make the first lookup together), so a registry is complete at its first lookup and no
file lists the plug-ins by hand.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import threading

_discovered: set[str] = set()
_lock = threading.RLock()  # re-entrant: a plug-in's import may look up another registry


def files(package: str) -> dict[str, str]:
    """The plug-in modules of ``package`` (a dotted name): name -> source file, in name order, none
    imported. A package's path may hold several folders (a test adds one)."""
    pkg = importlib.import_module(package)
    helpers = set(getattr(pkg, "HELPERS", ()))
    found = {m.name: os.path.join(m.module_finder.path, m.name + ".py") for m in pkgutil.iter_modules(pkg.__path__)
             if not m.ispkg and not m.name.startswith("_") and m.name not in helpers}
    return dict(sorted(found.items()))


def modules(package: str) -> list[str]:
    """The plug-in modules' names of ``package``, none imported."""
    return list(files(package))


def discover(package: str) -> None:
    """Import every plug-in module of ``package`` (their decorators register them), once."""
    if package in _discovered:
        return
    with _lock:
        if package in _discovered:
            return
        for name in modules(package):
            importlib.import_module(f"{package}.{name}")
        _discovered.add(package)
