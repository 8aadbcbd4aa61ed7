"""The code stays as easy to read as the architecture: DAG files declare, functions stay short.

Issue 13's "done when": no DAG file over about 80 lines, no function over about 80 lines (in ``dags/``,
``include/``, ``plugins/`` and the project's other packages). What is over the limit today is listed in
``ALLOWLIST`` with its length now: an entry may shrink, never grow, and no new offender may appear. When an
entry drops to the limit (or its code goes), the test asks for the entry to be removed, so the list only
ever gets shorter.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_DAG_FILE_LINES = 80
MAX_FUNCTION_LINES = 80
#: Every first-party package (the issue names dags/, include/ and plugins/; the rule holds for all).
CHECKED_FOLDERS = ("dags", "include", "plugins", "emulator", "sample_erp", "localdb", "demo", "deploy", "bench")

#: Today's offenders -> their length in lines: a DAG file by path, a function as ``path::qualified.name``.
ALLOWLIST: dict[str, int] = {}


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """``(qualified name, lines from ``def`` to the last line)`` of every function, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, (node.end_lineno or node.lineno) - node.lineno + 1
            yield from _functions(node, f"{name}.")
        else:
            yield from _functions(node, prefix)


def measured() -> dict[str, int]:
    """Every DAG file's and every function's length, keyed as in ``ALLOWLIST``."""
    sizes = {
        path.relative_to(REPO).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted((REPO / "dags").glob("*.py"))
    }
    for folder in CHECKED_FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for name, lines in _functions(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
                sizes[f"{rel}::{name}"] = max(lines, sizes.get(f"{rel}::{name}", 0))
    return sizes


def _limit(key: str) -> int:
    return MAX_FUNCTION_LINES if "::" in key else MAX_DAG_FILE_LINES


def test_no_new_long_dag_file_or_function_and_none_grows() -> None:
    over = {key: lines for key, lines in measured().items() if lines > _limit(key)}
    new = {key: lines for key, lines in over.items() if key not in ALLOWLIST}
    grown = {key: f"{ALLOWLIST[key]} -> {lines}" for key, lines in over.items() if lines > ALLOWLIST.get(key, lines)}
    assert not new, (
        f"over {MAX_DAG_FILE_LINES} lines (a DAG file) or {MAX_FUNCTION_LINES} lines (a function): {new}. "
        "Split it: DAG files declare, logic goes into the library or the provider."
    )
    assert not grown, f"allowlisted code grew (shrink it instead): {grown}"


def test_allowlist_lists_only_current_offenders() -> None:
    sizes = measured()
    stale = sorted(key for key in ALLOWLIST if sizes.get(key, 0) <= _limit(key))
    assert not stale, f"now within the limit or gone: remove from ALLOWLIST in {Path(__file__).name}: {stale}"


def test_the_measure_counts_nested_functions_and_decorated_tasks() -> None:
    source = (
        "def outer():\n    @task\n    def inner():\n        return 1\n    return inner\n\n"
        "class C:\n    def m(self):\n        pass\n"
    )
    assert dict(_functions(ast.parse(source))) == {"outer": 5, "outer.inner": 2, "C.m": 2}
