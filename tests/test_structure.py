"""The package's layout rules (issue 16), checked on the source with ``ast``:

(a) no library module imports a command module. The command modules are those ``locvtp.cli.COMMANDS`` names;
    every other module under ``src/locvtp`` is a library module. Imports count at module level and inside
    functions, relative ones resolved, and through a package's ``__init__``: importing ``locvtp.downstream``
    whose ``__init__`` forwards to the command module ``locvtp.downstream.evaluate`` counts as importing it.
    A command may import another command (``demo`` runs ``pretrain``).
(b) no function (or method) in ``src/locvtp`` is longer than 80 lines.

Every file is checked; there are no exemptions.
"""
from __future__ import annotations

import ast
from pathlib import Path

import locvtp
from locvtp.cli import COMMANDS

SRC = Path(locvtp.__file__).resolve().parent
MAX_LINES = 80


def _rel(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def _module_name(path: Path) -> str:
    parts = ("locvtp", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = sorted(SRC.rglob("*.py"))
# The `locvtp` sub-commands, and the diagnostics: `python -m locvtp.diagnostics.NAME` entry points (commands too).
COMMAND_MODULES = {target.split(":")[0] for target, _ in COMMANDS.values()} | {
    _module_name(p) for p in SOURCES if p.parent.name == "diagnostics" and p.name != "__init__.py"}


def _imports(path: Path) -> set[str]:
    """Every ``locvtp`` module ``path`` imports, at any depth (relative imports resolved); for ``from X import
    name`` both X and X.name (the name may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m == "locvtp" or m.startswith("locvtp.")}


def test_the_command_table_names_real_modules():
    names = {_module_name(p) for p in SOURCES}
    assert COMMAND_MODULES <= names, COMMAND_MODULES - names


def _command_imports(path: Path, inits: dict[str, set[str]]) -> set[str]:
    direct = _imports(path)
    via_init = set().union(*(inits.get(m, set()) for m in direct))
    return (direct | via_init) & COMMAND_MODULES


def test_no_library_module_imports_a_command_module():
    inits = {_module_name(p): _imports(p) & COMMAND_MODULES for p in SOURCES if p.name == "__init__.py"}
    bad = []
    for path in SOURCES:
        rel = _rel(path)
        if _module_name(path) in COMMAND_MODULES or rel == "cli.py":  # cli dispatches to them
            continue
        hits = _command_imports(path, inits)
        if hits:
            bad.append(f"{rel} imports {sorted(hits)}")
    assert not bad, "library modules import command modules:\n" + "\n".join(bad)


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
