"""The code's shape, as CONTRIBUTING.md's table draws it: each row imports only from its own row
and the rows above it; no import cycle between modules or between folders; an import inside a
function only defers a heavy or optional outside dependency, never one of the suite's modules."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suite"


def _layers() -> list[list[str]]:
    """The rows of the "Read this first" table, top to bottom, as dotted names."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text.split("## Read this first", 1)[1]
    table = section[section.index("| folder |"):].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cell = line.split("|")[1]
        rows.append([p.removesuffix("/").removesuffix(".py").replace("/", ".").removesuffix(".__init__")
                     for p in re.findall(r"`(suite/[^`]*)`", cell)])
    return rows


LAYERS = _layers()


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in SUITE.rglob("*.py")}


def _rank(module: str) -> int:
    ranks = [r for r, entries in enumerate(LAYERS) for e in entries
             if module == e or (e != "suite" and module.startswith(e + "."))]  # suite: its __init__ only
    assert len(ranks) == 1, f"{module} is in {len(ranks)} rows of CONTRIBUTING.md's table: put it (its folder) in one"
    return ranks[0]


def _folder(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _resolve(importer: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importer's package
            package = importer.split(".") if MODULES[importer].name == "__init__.py" else importer.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return [n for n in names if n.split(".")[0] == "suite" and n in MODULES]


def _imports(module: str):
    """(node, imported suite modules, inside a function?) of every import of ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for f in functions for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, _resolve(module, node), id(node) in inner


GRAPH = {m: {t for _, targets, _ in _imports(m) for t in targets if t != m} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected part of ``graph`` (Tarjan), as a list of its nodes."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v), on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_table_names_folders_and_top_level_modules_only():
    entries = [e for row in LAYERS for e in row]
    assert len(LAYERS) >= 8 and "suite.config" in entries and "suite.commands" in entries
    nested = [e for e in entries if e.count(".") > 1]
    assert not nested, f"a row names a module inside a folder (give the folder one row): {nested}"
    missing = [e for e in entries if e not in MODULES]
    assert not missing, f"CONTRIBUTING.md names what does not exist: {missing}"
    for module in MODULES:
        _rank(module)


def test_layers_import_only_downwards():
    wrong = [f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets if _rank(t) > _rank(m)]
    assert not wrong, wrong


def test_no_module_import_cycle():
    # a package's __init__ importing its own submodules (re-exports) is not a loop of the design
    graph = {m: {t for t in targets if not t.startswith(m + ".")} for m, targets in GRAPH.items()}
    assert not _cycles(graph), _cycles(graph)


def test_no_folder_import_cycle():
    graph: dict[str, set[str]] = {}
    for m, targets in GRAPH.items():
        graph.setdefault(_folder(m), set()).update(_folder(t) for t in targets if _folder(t) != _folder(m))
    assert not _cycles(graph), _cycles(graph)


def test_imports_inside_functions_only_defer_outside_dependencies():
    suite_modules, undocumented = [], []
    for m, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node, targets, inner in _imports(m):
            if not inner:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if targets or (isinstance(node, ast.ImportFrom) and node.level):
                suite_modules.append(where)
            elif "deferred" not in " ".join(lines[max(0, node.lineno - 3): node.end_lineno]).lower():
                undocumented.append(where)
    assert not suite_modules, f"the suite's own modules imported inside functions (move the code instead): {suite_modules}"
    assert not undocumented, f"imports inside functions without a comment saying why they are deferred: {undocumented}"


def test_the_checks_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _rank("suite.cli") > _rank("suite.config.schema")
