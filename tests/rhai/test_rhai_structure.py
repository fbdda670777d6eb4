"""The rhai package's shape: standard library only, no import cycles between its modules."""

from __future__ import annotations

import ast
import pathlib
import sys

PKG = pathlib.Path(__file__).resolve().parents[2] / "rhai"
MODULES = sorted(p.stem for p in PKG.glob("*.py"))


def imports_of(name: str) -> tuple[set[str], set[str]]:
    """(rhai modules, other top-level packages) imported anywhere in module ``name``."""
    tree = ast.parse((PKG / f"{name}.py").read_text())
    local: set[str] = set()
    foreign: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.module:
                    local.add(node.module.split(".")[0])
                else:
                    local.update(a.name for a in node.names)
            elif node.module:
                foreign.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            foreign.update(a.name.split(".")[0] for a in node.names)
    return local, foreign


def test_standard_library_only() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    for name in MODULES:
        _, foreign = imports_of(name)
        assert foreign <= allowed, f"rhai/{name}.py imports {sorted(foreign - allowed)}"


def test_no_import_cycles() -> None:
    graph = {name: imports_of(name)[0] - {"__init__"} for name in MODULES}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, "import cycle: " + " -> ".join([*path, name])
        if name in done:
            return
        for dep in sorted(graph.get(name, set())):
            visit(dep, [*path, name])
        done.add(name)

    for name in MODULES:
        if name != "__init__":
            visit(name, [])


def test_modules_stay_small() -> None:
    """One job per module: none grows past about 600 lines."""
    for name in MODULES:
        n = len((PKG / f"{name}.py").read_text().splitlines())
        assert n <= 600, f"rhai/{name}.py has {n} lines"
