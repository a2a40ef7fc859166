"""The ``caenet`` commands, one module each (a plug-in folder, like ``suite/methods``).

A command module defines ``HELP`` (its line in ``caenet --help``), ``ORDER`` (its place
there), ``add_parser(sub)``, which adds its argparse sub-parser and sets ``func``, and that
entry, ``main(args) -> exit code``. Commands that train, track or read the cache enter
through ``suite.pipeline.session.open_session``.

``caenet --help`` reads ``HELP`` and ``ORDER`` from the files without importing them, and a
command line imports only its own command: the modules import torch, Ray and MLflow, which
take seconds, and a mistyped option should not.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType

from suite import plugins

HELPERS = {"arguments"}  # not a command (suite.plugins)


def catalog() -> dict[str, str]:
    """command name -> its ``HELP``, in ``ORDER``; read from the sources, nothing imported."""
    found = []
    for name in plugins.modules(__name__):
        tree = ast.parse((Path(__path__[0]) / f"{name}.py").read_text())
        consts = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                  for t in node.targets if isinstance(t, ast.Name)}
        found.append((consts.get("ORDER", 100), name, consts.get("HELP", "")))
    return {name: text for _, name, text in sorted(found)}


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")
