"""The module graph: every module imports on its own, no module imports one that imports it back, and no
private name crosses a module boundary."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rlrun"


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (imports for type hints never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import of an rlrun module in ``path`` that runs, at any depth (late imports
    inside functions included)."""
    found = []
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("rlrun")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlrun"):
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the rlrun modules it imports (``from pkg import submodule`` counts as importing the submodule)."""
    known = set(module_names())
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = set()
        for module, names in imports(path):
            subs = {f"{module}.{n}" for n in names if f"{module}.{n}" in known}
            targets |= subs or {module}
        edges[name] = targets - {name}
    return edges


def test_no_module_imports_one_that_imports_it_back():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_is_imported_from_another_module():
    private = [f"{path.relative_to(ROOT)}: from {module} import {name}"
               for path in sorted(PACKAGE.rglob("*.py")) for module, names in imports(path)
               for name in names if name.startswith("_")]
    assert not private, "\n".join(private)


CHILD = """
import importlib, os, sys, traceback
import gymnasium, hydra, numpy, omegaconf, torch  # the heavy third-party imports, loaded once and shared
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:  # a fresh child with no rlrun module loaded: import this one on its own
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
print("FAILED " + " ".join(failed) if failed else "OK")
"""


def test_every_module_imports_on_its_own():
    done = subprocess.run([sys.executable, "-c", CHILD, *module_names()], capture_output=True, text=True,
                          check=False, cwd=ROOT)
    assert done.stdout.strip() == "OK", done.stdout + done.stderr
