"""Shared fixtures. Each area keeps its fixtures in ``tests/fixtures/`` and registers them here."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.airflow_env",
    "tests.fixtures.airflow_stack",
    "tests.fixtures.integration",
    "tests.fixtures.emulator",
    "tests.fixtures.provider",
    "tests.fixtures.dags",
    "tests.fixtures.postgres",
    "tests.fixtures.mail",
    "tests.fixtures.mariadb",
    "tests.fixtures.databases",
    "tests.fixtures.runs",
]
