"""The import graph of the shipped packages: no circle, no import running back up the layers.

Read from the source (AST), not by importing, so that every import counts wherever it is written: at module
level, under ``if TYPE_CHECKING:`` or inside a function. An import inside a function hides a circle from
Python but not from a reader; one of a first-party module is allowed only where it is listed in
:data:`LAZY_FIRST_PARTY` with the reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Top-level package -> its folder (the layout pyproject.toml maps).
PACKAGES: dict[str, Path] = {
    "connectif_provider": REPO / "plugins" / "connectif_provider",
    "connectif_sync": REPO / "include" / "connectif_sync",
    "emulator": REPO / "emulator",
    "sample_erp": REPO / "sample_erp",
    "localdb": REPO / "localdb",
}

#: Imports of first-party modules inside functions, each with why it cannot be at module level. An entry that
#: no longer matches an import fails the test too, so the list only shrinks.
LAZY_FIRST_PARTY: dict[tuple[str, str], str] = {
    ("connectif_sync.cli", "sample_erp"): "test data, needed by the `sample-erp` command only (the CLI's other "
    "commands must not pay for importing the generator)",
    ("connectif_provider.alerts", "connectif_sync.alerts"): "the alert words and kinds are the library's; the "
    "provider's hooks, operators and triggers import without the sync library, only sending an alert needs it",
    ("connectif_provider.alerts", "connectif_sync.store"): "the on-state-change record lives in the state store "
    "(SQLAlchemy engines): imported only when an alert is decided, never by the triggerer's other work",
}

#: Packages that these packages must never import (the layers of the README: the library is Airflow-free and
#: knows no provider; no product code imports the emulator; the generator is test data, used lazily only).
FORBIDDEN: dict[str, set[str]] = {
    "connectif_sync": {"connectif_provider", "emulator"},
    "connectif_provider": {"emulator", "sample_erp"},
    "sample_erp": {"connectif_provider", "connectif_sync", "emulator"},
    "emulator": {"connectif_provider", "connectif_sync", "sample_erp"},
    "localdb": {"connectif_provider", "connectif_sync", "emulator", "sample_erp"},
}


class Where(Enum):
    MODULE = "module level"
    TYPE_CHECKING = "if TYPE_CHECKING"
    FUNCTION = "inside a function"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: Where
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.where.value}, line {self.line})"


def modules(packages: dict[str, Path]) -> dict[str, Path]:
    """Every module of ``packages`` by dotted name (a package by its own name, for its ``__init__.py``).

    C extensions count as modules too (by their source, which defines ``PyInit_<name>``), built or not."""
    found: dict[str, Path] = {}
    for name, root in packages.items():
        for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.c")):
            if path.suffix == ".c" and f"PyInit_{path.stem}" not in path.read_text(encoding="utf-8", errors="replace"):
                continue
            parts = [name, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, where: Where) -> Iterator[tuple[ast.Import | ast.ImportFrom, Where]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, where
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(child, Where.FUNCTION)
        elif isinstance(child, ast.If) and where is Where.MODULE and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), Where.TYPE_CHECKING)
            for stmt in child.orelse:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), where)
        else:
            yield from _imports(child, where)


def edges(packages: dict[str, Path]) -> list[Edge]:
    """The first-party imports of every module of ``packages``."""
    known = modules(packages)
    found: list[Edge] = []
    for name, path in known.items():
        if path.suffix != ".py":
            continue
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, where in _imports(tree, Where.MODULE):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from pkg import sub`` imports the submodule; ``from pkg import name`` runs pkg/__init__.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in dict.fromkeys(targets):
                while target and target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]  # ``import a.b.c`` of a name inside a module
                if target in known and target != name:
                    found.append(Edge(name, target, where, node.lineno))
    return found


def cycles(found: list[Edge]) -> list[list[Edge]]:
    """The import circles: one list of edges per strongly connected group of modules (Tarjan)."""
    graph: dict[str, list[Edge]] = {}
    for edge in found:
        graph.setdefault(edge.source, []).append(edge)
        graph.setdefault(edge.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [[e for e in found if e.source in g and e.target in g] for g in groups]


def test_no_import_circle() -> None:
    circles = cycles(edges(PACKAGES))
    assert not circles, "import circles (break each by moving the shared piece into a module both import):\n" + (
        "\n\n".join("\n".join(f"  {e}" for e in group) for group in circles)
    )


def test_first_party_imports_inside_functions_are_listed_with_a_reason() -> None:
    lazy = {(e.source, e.target): e for e in edges(PACKAGES) if e.where is Where.FUNCTION}
    unlisted = [str(e) for key, e in sorted(lazy.items()) if key not in LAZY_FIRST_PARTY]
    assert not unlisted, (
        "first-party imports hidden inside functions: move them to module level, or list them in "
        "LAZY_FIRST_PARTY with the reason:\n" + "\n".join(unlisted)
    )
    stale = [f"{a} -> {b}" for a, b in LAZY_FIRST_PARTY if (a, b) not in lazy]
    assert not stale, f"LAZY_FIRST_PARTY lists imports that are gone (remove them): {stale}"


def test_no_import_runs_back_up_the_layers() -> None:
    wrong = [
        str(e)
        for e in edges(PACKAGES)
        if e.target.split(".")[0] in FORBIDDEN[e.source.split(".")[0]] and (e.source, e.target) not in LAZY_FIRST_PARTY
    ]
    assert not wrong, "imports across the layers (see FORBIDDEN):\n" + "\n".join(wrong)


def test_the_checker_finds_circles_hidden_in_functions_and_type_checking(tmp_path: Path) -> None:
    """The checks above can fail: a circle through a function-level and a TYPE_CHECKING import is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import thing\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import C\nthing = 1\n"
    )
    (pkg / "c.py").write_text("class C:\n    def run(self):\n        from . import a\n        return a\n")
    (pkg / "d.py").write_text("import os\nfrom pkg import b\n")
    found = edges({"pkg": pkg})
    assert {(e.source, e.target, e.where) for e in found} == {
        ("pkg.a", "pkg.b", Where.MODULE),
        ("pkg.b", "pkg.c", Where.TYPE_CHECKING),
        ("pkg.c", "pkg.a", Where.FUNCTION),
        ("pkg.d", "pkg.b", Where.MODULE),
    }
    (circle,) = cycles(found)
    assert {e.source for e in circle} == {"pkg.a", "pkg.b", "pkg.c"}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_package_folder_exists(package: str) -> None:
    assert (PACKAGES[package] / "__init__.py").is_file(), f"{package} moved: update PACKAGES in this test"
