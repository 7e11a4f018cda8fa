"""The package's shape: no import cycle, every module importable on its own, no private name used
across modules, no function over 80 lines (docstring aside)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "melanoma"
MAX_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imported(name: str, f: Path, mods: dict[str, Path]):
    """(imported package module, imported name or ``None``, local alias) of every import of a
    package module in ``f``, at module level or inside functions."""
    pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                if f"{target}.{a.name}" in mods:  # `from . import features`: the module itself
                    yield f"{target}.{a.name}", None, a.asname or a.name
                elif target in mods:
                    yield target, a.name, a.asname or a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in mods:
                    yield a.name, None, a.asname


def import_graph() -> dict[str, set[str]]:
    """module → package modules it imports (at any level of the file)."""
    mods = _modules()
    return {name: {t for t, _, _ in _imported(name, f, mods) if t != name} for name, f in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, …, a]``, or ``None`` (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (c := visit(w)):
                return c
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (c := visit(v)):
            return c
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"melanoma.train.recipe", "melanoma.train.run", "melanoma.train.loop", "melanoma.train.group"} <= set(graph)
    assert "melanoma.train.run" in graph["melanoma.train.recipe"]  # the graph sees module-level imports
    assert "melanoma.train.run" in graph["melanoma.train.features"]  # ... and imports inside functions
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def stage_of(module: str) -> str:
    """``melanoma.train.loop`` → ``train`` (a stage: a sub-package); ``melanoma.io`` → ``io``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "melanoma"


def stage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """stage → the other stages (or top-level modules) its modules import."""
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        out.setdefault(stage_of(a), set()).update(stage_of(b) for b in targets if stage_of(b) != stage_of(a))
    return out


def test_stages_form_no_cycle_and_top_level_modules_are_leaves():
    """The layout is the data flow: each stage (data, train, evaluate, report, pipeline) imports
    only stages below it, never one that imports it back; the top-level modules other than the CLI
    (io, home, provenance) are utilities every stage may use, and they import no stage."""
    graph = import_graph()
    stages = stage_graph(graph)
    assert {"data", "train", "evaluate", "report", "pipeline"} <= set(stages)
    cycle = find_cycle(stages)
    assert cycle is None, "stages import each other: " + " → ".join(cycle)
    subpackages = {stage_of(m) for m in graph if m.count(".") >= 2}
    top = [m for m in graph if m.count(".") == 1 and stage_of(m) not in subpackages and m != "melanoma.cli"]
    assert top, "no top-level module found"
    bad = {m: sorted(stages.get(stage_of(m), set()) & subpackages) for m in top}
    assert not {m: s for m, s in bad.items() if s}, bad
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # the same check sees a stage cycle


def test_every_module_imports_on_its_own():
    """Each module imported first, in a fresh interpreter with no other module of the package
    loaded (third-party modules stay loaded: only the package's import order is under test)."""
    names = sorted(_modules())
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for m in [m for m in sys.modules if m == 'melanoma' or m.startswith('melanoma.')]:\n"
            "        del sys.modules[m]\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception as e:\n"
            "        print(f'{name}: {type(e).__name__}: {e}')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_no_private_name_crosses_modules():
    """``from .x import _name`` and ``x._name`` on an imported package module are errors: what
    another module needs is public (named without a leading underscore) where it is defined."""
    mods = _modules()
    bad = []
    for name, f in mods.items():
        aliases = set()  # local names bound to package modules
        for target, imported, alias in _imported(name, f, mods):
            if imported is None:
                aliases.add(alias)
            elif imported.startswith("_") and not imported.startswith("__"):
                bad.append(f"{name}: from {target} import {imported}")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, bad


def function_lengths(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, line, lines from ``def`` to the end, docstring aside) of every function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    first = child.body[0]
                    doc = (first.end_lineno - first.lineno + 1
                           if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                           and isinstance(first.value.value, str) else 0)
                    out.append((qual, child.lineno, child.end_lineno - child.lineno + 1 - doc))
                walk(child, qual + ".")
            else:
                walk(child, prefix)

    walk(tree, "")
    return out


def test_function_lengths_counts_lines_without_the_docstring(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('def a():\n    """Doc\n    more."""\n    x = 1\n    return x\n\n\n'
                 'class C:\n    def b(self):\n        def inner():\n            pass\n        return 1\n')
    assert function_lengths(f) == [("a", 1, 3), ("C.b", 9, 4), ("C.b.inner", 10, 2)]


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG.parent)))
def test_no_function_over_80_lines(path):
    rel = str(path.relative_to(PKG.parent))
    long = [f"{q} (line {line}): {n} lines" for q, line, n in function_lengths(path) if n > MAX_LINES]
    assert not long, f"{rel}: functions over {MAX_LINES} lines, docstring aside: {long}"


def test_no_test_file_imports_another_test_file():
    """Helpers shared by test files live in helper modules (conftest.py, tests/runs.py, ...)."""
    bad = []
    files = sorted(PKG.parent.joinpath("tests").rglob("*.py"))
    assert any(f.parent.name == "train" for f in files)  # the stage folders are searched too
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            bad += [f"{f.name}: {n}" for n in names if n.rpartition(".")[2].startswith("test_")]
    assert not bad, bad
