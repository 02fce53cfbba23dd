"""The package's import graph: no cycles, and a core that imports nothing outside itself.

Every ``import`` statement counts, also those inside functions (a lazy import
still ties two modules together). Importing ``a.b.c`` counts as importing the
packages ``a.b`` and ``a`` too, because Python runs their ``__init__`` first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnlens"


def _modules(root: Path = SRC) -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _imported(name: str, is_pkg: bool, node: ast.AST, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        targets = {a.name for a in node.names}
    else:
        if node.level:
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        targets = {
            f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names
        }
    out = set()
    for t in targets:
        parts = t.split(".")
        for i in range(2, len(parts) + 1):
            prefix = ".".join(parts[:i])
            # a module's own ancestors run first anyway: not an edge
            if prefix in known and prefix != name and not name.startswith(prefix + "."):
                out.add(prefix)
    return out


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """``module -> modules of the package it imports`` (dotted names)."""
    mods = _modules(root)
    known = set(mods)
    graph = {}
    for name, (path, is_pkg) in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps |= _imported(name, is_pkg, node, known)
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_core_imports_only_core():
    outside = {
        m: sorted(d for d in deps if not d.startswith("cnnlens.core"))
        for m, deps in import_graph().items()
        if m.startswith("cnnlens.core")
    }
    assert {m: d for m, d in outside.items() if d} == {}


def test_cycle_finder_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "cnnlens"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    (pkg / "c.py").write_text("import cnnlens.a\n")
    graph = import_graph(pkg)
    assert graph["cnnlens.c"] == {"cnnlens.a"}
    assert cycles(graph) == [["cnnlens.a", "cnnlens.sub.b"]]


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_source_files_stay_small(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 400
