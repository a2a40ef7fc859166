"""The code's shape: the pipeline's layers import only downwards, no module-level import cycle,
and an import inside a function only where a heavy dependency is deferred on purpose."""

import ast
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / "suite"

# Lower rows never import higher ones (CONTRIBUTING.md, "Read this first").
LAYERS = [
    ["suite", "suite.errors", "suite.locks", "suite.config"],
    ["suite.data"],
    ["suite.models", "suite.compression", "suite.metrics", "suite.report.plots"],  # compressed models rebuild by name
    ["suite.training", "suite.clustering", "suite.distributed.storage"],  # storage: files on any pyarrow filesystem
    ["suite.distributed"],
    ["suite.pipeline"],
    ["suite.stages", "suite.methods"],  # stage bodies: the CAE-Net stages and the competitor methods
    ["suite.edge", "suite.report"],
    # suite.sweep / suite.study: the `sweep` command's trials and SLO search, the `study` command's cells and table
    ["suite.commands", "suite.cli", "suite.sweep", "suite.study"],
]


def _name(path: Path) -> str:
    parts = path.relative_to(SUITE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in SUITE.rglob("*.py")}


def _rank(module: str) -> int:
    best = (-1, None)
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), rank)
    assert best[1] is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def _resolve(importer: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importer's package
            package = importer.split(".") if (MODULES[importer].name == "__init__.py") else importer.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return [n for n in names if n.split(".")[0] == "suite" and n in MODULES]


def _imports(module: str, top_level: bool):
    """(node, imported suite modules) of the module-level imports, or of those inside functions."""
    tree = ast.parse(MODULES[module].read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for f in functions for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and (id(node) not in inner) == top_level:
            yield node, _resolve(module, node)


def test_layers_import_only_downwards():
    wrong = [f"{m} imports {target}" for m in MODULES for _, targets in _imports(m, True) for target in targets
             if _rank(target) > _rank(m)]
    assert not wrong, wrong


def test_no_module_level_import_cycle():
    graph = {m: {t for _, targets in _imports(m, True) for t in targets if t != m} for m in MODULES}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(graph[m]):
            if t.startswith(m + "."):  # a package importing its own submodules (registries) is fine
                continue
            if state.get(t) == "open" and not m.startswith(t + "."):
                cycles.append(stack[stack.index(t):] + [t] if t in stack else [m, t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_imports_inside_functions_are_deliberate_deferrals():
    undocumented = []
    for m, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node, _ in _imports(m, False):
            around = " ".join(lines[max(0, node.lineno - 3): node.end_lineno]).lower()
            if "deferred" not in around and "imported on first" not in around and "on the board" not in around:
                undocumented.append(f"{path.relative_to(SUITE.parent)}:{node.lineno}")
    assert not undocumented, f"imports inside functions without a comment saying why they are deferred: {undocumented}"
