"""pyproject.toml declares what the shipped code imports, so that ``pip install airflow-connectif`` brings it.

Fast and static (the slow end-to-end proof is ``test_wheel_installs_with_its_dependencies_next_to_airflow``):
every third-party module imported by the shipped packages must come from a distribution that the declared
requirements bring, directly or through their own requirements, as installed in this venv:

- module-level imports of the provider, the sync library and the sample ERP: the core ``dependencies``;
- imports inside functions (optional backends: Redis, PostgreSQL's ADBC driver...): core plus the extras;
- the emulator: core plus the ``emulator`` extra.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_imports import PACKAGES, Where, _imports

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
CORE: list[str] = PROJECT["dependencies"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
FIRST_PARTY = set(PACKAGES) | {"tests"}
TOP_TO_DISTS = metadata.packages_distributions()


def brought_by(requirements: Iterable[str]) -> set[str]:
    """The distributions (canonical names) that installing ``requirements`` brings, as installed here."""
    names: set[str] = set()
    done: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        names.add(name)
        for wanted in ("", *req.extras):
            if (name, wanted) in done:
                continue
            done.add((name, wanted))
            try:
                requires = metadata.distribution(req.name).requires or []
            except metadata.PackageNotFoundError:
                break
            todo.extend((Requirement(sub), wanted) for sub in requires)
    return names


def third_party(package: str) -> list[tuple[str, Where, str]]:
    """(top-level module, where, file:line) of every import of a non-stdlib, non-first-party module."""
    found = []
    for path in sorted(PACKAGES[package].rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, where in _imports(tree, Where.MODULE):
            if isinstance(node, ast.ImportFrom):
                if node.level or not node.module:
                    continue
                names = [node.module]
            else:
                names = [a.name for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in FIRST_PARTY or top == "__future__":
                    continue
                found.append((top, where, f"{path.relative_to(REPO)}:{node.lineno}"))
    return found


def uncovered(package: str, allowed: dict[Where, set[str]]) -> list[str]:
    missing = []
    for top, where, at in third_party(package):
        if where is Where.TYPE_CHECKING:
            continue  # not imported at run time
        dists = {canonicalize_name(d) for d in TOP_TO_DISTS.get(top, [])}
        if not dists:
            missing.append(f"{at}: {top} (installed by no distribution here)")
        elif not dists & allowed[where]:
            missing.append(f"{at}: {top} (from {sorted(dists)}; {where.value})")
    return missing


@pytest.mark.parametrize("package", ["connectif_provider", "connectif_sync", "sample_erp"])
def test_shipped_code_imports_only_declared_dependencies(package: str) -> None:
    core = brought_by(CORE)
    optional = brought_by(CORE + [r for reqs in EXTRAS.values() for r in reqs])
    missing = uncovered(package, {Where.MODULE: core, Where.FUNCTION: optional})
    assert not missing, (
        "imports that pyproject.toml's dependencies do not bring (module level: add to `dependencies`; inside "
        "a function for an optional backend: an extra):\n" + "\n".join(missing)
    )


def test_emulator_imports_are_declared_by_its_extra() -> None:
    brought = brought_by(CORE + EXTRAS["emulator"])
    missing = uncovered("emulator", {Where.MODULE: brought, Where.FUNCTION: brought})
    assert not missing, "emulator imports its extra does not bring:\n" + "\n".join(missing)


def test_extras_name_the_optional_backends() -> None:
    assert {"redis", "postgres", "mysql", "emulator"} <= set(EXTRAS)
    assert "redis" in brought_by(EXTRAS["redis"])
    assert {"psycopg2-binary", "adbc-driver-postgresql"} <= brought_by(EXTRAS["postgres"])


def test_every_declared_dependency_is_a_range_and_pinned_for_tests() -> None:
    """Ranges in pyproject.toml (never ``==``), and each one pinned in constraints.txt (the tested versions)."""
    pinned = {
        canonicalize_name(line.split("==")[0])
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for text in CORE + [r for reqs in EXTRAS.values() for r in reqs]:
        req = Requirement(text)
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{text}: declare a range, not a pin"
        assert canonicalize_name(req.name) in pinned, f"{req.name} is not pinned in constraints.txt"


def test_the_checker_sees_an_undeclared_import() -> None:
    """The coverage check can fail: drop phonenumbers from the core and the generator's import is reported."""
    without = [r for r in CORE if canonicalize_name(Requirement(r).name) != "phonenumbers"]
    core = brought_by(without)
    assert "phonenumbers" not in core
    missing = uncovered("sample_erp", {Where.MODULE: core, Where.FUNCTION: core})
    assert any(": phonenumbers (" in m for m in missing), missing
