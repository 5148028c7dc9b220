"""The package's layout rules (issues 16 and 22), checked on the source with ``ast``:

(a) every command's ``main`` lives in :mod:`locvtp.commands`, and nothing outside ``commands/``, ``diagnostics/``
    (``python -m`` entry points) and ``cli.py`` imports ``locvtp.commands``: library code never reaches a command;
(b) no import cycle among the modules of ``src/locvtp``: imports inside functions count like module-level ones
    (a cycle hidden in a function is still two modules that need each other);
(c) no function (or method) in ``src/locvtp`` is longer than 80 lines.

Imports are read with ``ast`` (relative ones resolved); ``from X import name`` is an edge to ``X.name`` when that
is a module, else to ``X``. The parent packages Python also runs on ``import a.b.c`` are not counted: a package's
``__init__`` holds no code that imports back (``locvtp/__init__.py`` is the version only).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import locvtp
from locvtp.cli import COMMANDS

SRC = Path(locvtp.__file__).resolve().parent
MAX_LINES = 80
SOURCES = sorted(SRC.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def _module_name(path: Path) -> str:
    parts = ("locvtp", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SOURCES}


def _owner(name: str) -> str:
    """The module ``name`` lives in: itself when it is a module, else its nearest enclosing one."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(path: Path) -> set[str]:
    """Every ``locvtp`` module ``path`` imports, at any depth of the file (module level, functions, methods)."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(_owner(a.name) for a in node.names if a.name.split(".")[0] == "locvtp")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "locvtp":
                continue
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else _owner(base) for a in node.names)
    return found - {here}


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one importing itself (Tarjan, iterative
    so that a deep chain cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next((c for c in children if c in graph), None)
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
                if len(comp) > 1 or v in graph[v]:
                    found.append(sorted(comp))
    return found


# ------------------------------------------------------------------------------------------------------- commands
def test_every_command_lives_in_locvtp_commands():
    targets = {name: target.split(":")[0] for name, (target, _) in COMMANDS.items()}
    assert set(targets.values()) <= set(MODULES), set(targets.values()) - set(MODULES)
    outside = {name: mod for name, mod in targets.items() if not mod.startswith("locvtp.commands.")}
    assert not outside, f"commands whose main is not in locvtp.commands: {outside}"


def _may_import_commands(name: str) -> bool:
    return name == "locvtp.cli" or name.split(".")[:2] in (["locvtp", "commands"], ["locvtp", "diagnostics"])


def test_only_commands_diagnostics_and_cli_import_locvtp_commands():
    bad = [f"{_rel(MODULES[name])} imports {sorted(hits)}" for name, deps in sorted(GRAPH.items())
           if not _may_import_commands(name)
           and (hits := {d for d in deps if d == "locvtp.commands" or d.startswith("locvtp.commands.")})]
    assert not bad, "library modules import command modules:\n" + "\n".join(bad)


# ---------------------------------------------------------------------------------------------------------- cycles
def test_no_import_cycle_counting_imports_inside_functions():
    found = cycles(GRAPH)
    detail = [" <-> ".join(c) + "\n    " + "\n    ".join(f"{m} -> {sorted(GRAPH[m] & set(c))}" for m in c)
              for c in found]
    assert not found, "import cycles:\n" + "\n".join(detail)


def test_the_cycle_finder_finds_cycles():
    """The finder against hand-made graphs: a 2-cycle, a 3-cycle reached through a chain, a self-import, a DAG."""
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert cycles({"x": {"a"}, "a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    chain = {f"m{i}": {f"m{i + 1}"} for i in range(3000)} | {"m3000": {"m0"}}  # deep: no recursion limit
    assert [len(c) for c in cycles(chain)] == [3001]


def test_imports_inside_functions_are_read():
    """``imports_of`` sees a function-level relative import (what hid the corpus <-> datasets cycle)."""
    probe = SRC / "training" / "corpus.py"
    assert "locvtp.training.records" in GRAPH["locvtp.training.corpus"]  # imported inside _ProbeJob.__call__ only
    tree = ast.parse(probe.read_text(encoding="utf-8"))
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert "locvtp.training.records" not in top


# -------------------------------------------------------------------------------------------------- function size
def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - start + 1
            if n > MAX_LINES:
                out.append(f"{_rel(path)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_is_longer_than_80_lines():
    long = [f for path in SOURCES for f in _long_functions(path)]
    assert not long, f"functions over {MAX_LINES} lines:\n" + "\n".join(long)


@pytest.mark.parametrize("old", ["features", "train", "extract", "search", "ground", "demo", "synth", "prepare",
                                 "evaluate", "score", "data/corpus", "data/datasets", "data/sampler",
                                 "data/synthetic", "serve/cli"])
def test_no_second_door_where_a_module_moved(old):
    """A moved module leaves no compatibility re-export behind (CHANGELOG.md lists the new homes)."""
    assert not (SRC / f"{old}.py").exists()
