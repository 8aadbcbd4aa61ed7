"""``make compose-check``: a sound compose file passes, each kind of broken one is rejected with a clear message.

The broken files are variations of a minimal repository written into a temporary directory, so that each
test breaks exactly one thing; the real repository's files are checked by ``test_repository_compose_file``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.compose_check import REPO, ComposeChecker, main
from deploy.make_env import documented_variables, render

COMPOSE = """\
x-common: &common
  image: mini:latest
  build:
    context: .
  environment: &common-env
    AIRFLOW__CORE__EXECUTOR: CeleryExecutor
    MINI_SETTING: ${MINI_SETTING:?set it}
  volumes:
    - mini-logs:/opt/airflow/logs

services:
  db:
    image: postgres:15
    environment:
      POSTGRES_PASSWORD: ${MINI_DB_PASSWORD:?set it}
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres"]
    restart: always

  init:
    <<: *common
    entrypoint: /bin/bash
    command: ["/opt/airflow/deploy/init.sh"]
    restart: "no"
    depends_on:
      db:
        condition: service_healthy

  api:
    <<: *common
    command: api-server
    healthcheck:
      test: ["CMD", "curl", "--fail", "http://localhost:8080/api/v2/version"]
    restart: always
    depends_on:
      init:
        condition: service_completed_successfully

  tool:
    <<: *common
    entrypoint: ["mini-tool"]
    command: ["sub", "--n", "3"]
    restart: "no"

volumes:
  mini-logs:
"""

ENV_EXAMPLE = """\
# Read by deploy/init.sh.
MINI_SETTING=hello
# Password of the database.
MINI_DB_PASSWORD=example
"""

DOCKERFILE = """\
FROM apache/airflow:3.3.2-python3.11
COPY deploy/ /opt/airflow/deploy/
"""

INIT_SH = """\
#!/usr/bin/env bash
set -euo pipefail
echo "${MINI_SETTING}"
"""

CLI = """\
import argparse


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sub").add_argument("--n", type=int, required=True)
    args = parser.parse_args()
    raise SystemExit(f"the CLI ran for real with {args}: the checker must stop right after parsing")
"""


def write_mini_repo(root: Path) -> Path:
    (root / "deploy").mkdir(parents=True)
    (root / "docker-compose.yaml").write_text(COMPOSE)
    (root / ".env.example").write_text(ENV_EXAMPLE)
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / ".dockerignore").write_text(".env\n.venv\n")
    (root / "requirements.txt").write_text("apache-airflow==3.3.2\n")
    (root / "pyproject.toml").write_text('[project]\nname = "mini"\n[project.scripts]\nmini-tool = "mini_cli:main"\n')
    (root / "mini_cli.py").write_text(CLI)
    init = root / "deploy" / "init.sh"
    init.write_text(INIT_SH)
    init.chmod(0o755)
    return root


@pytest.fixture
def mini_repo(tmp_path: Path) -> Path:
    return write_mini_repo(tmp_path / "repo")


def problems(root: Path) -> list[str]:
    return ComposeChecker(root).run().problems


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"test set-up: {old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def test_sound_minimal_repo_passes(mini_repo: Path) -> None:
    assert problems(mini_repo) == []


def test_repository_compose_file() -> None:
    """The real docker-compose.yaml, Dockerfile and .env.example of this repository."""
    report = ComposeChecker(REPO).run()
    assert report.problems == []
    assert any("docker-compose config: OK" in note for note in report.notes)


def test_main_exit_codes(mini_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(mini_repo)]) == 0
    assert "compose-check: OK" in capsys.readouterr().out
    edit(mini_repo / "docker-compose.yaml", "command: api-server", "command: api-servr")
    assert main(["--root", str(mini_repo)]) == 1
    assert "api-servr" in capsys.readouterr().err


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "schema: unknown service option": (
        lambda r: edit(
            r / "docker-compose.yaml",
            '    healthcheck:\n      test: ["CMD", "curl"',
            '    helthcheck:\n      test: ["CMD", "curl"',
        ),
        "docker-compose config rejects it: ",
    ),
    "undeclared named volume": (
        lambda r: edit(r / "docker-compose.yaml", "volumes:\n  mini-logs:\n", ""),
        "mini-logs",
    ),
    "variable missing from .env.example": (
        lambda r: edit(
            r / "docker-compose.yaml",
            "MINI_SETTING: ${MINI_SETTING:?set it}",
            "MINI_SETTING: ${MINI_SETTING:?set it}${MINI_UNDOCUMENTED:-x}",
        ),
        "${MINI_UNDOCUMENTED} is not in .env.example",
    ),
    "variable without a comment": (
        lambda r: edit(r / ".env.example", "# Password of the database.\n", "\n"),
        "MINI_DB_PASSWORD has no comment",
    ),
    "variable documented but unused": (
        lambda r: (r / ".env.example").write_text(ENV_EXAMPLE + "# Nobody reads it.\nMINI_STALE=1\n"),
        "MINI_STALE is not used",
    ),
    "typo in an Airflow command": (
        lambda r: edit(r / "docker-compose.yaml", "command: api-server", "command: api-servr"),
        "invalid choice: 'api-servr'",
    ),
    "script missing from the image": (
        lambda r: (r / "deploy" / "init.sh").unlink(),
        "/opt/airflow/deploy/init.sh maps to deploy/init.sh, which does not exist",
    ),
    "script not copied into the image": (
        lambda r: edit(r / "docker-compose.yaml", "/opt/airflow/deploy/init.sh", "/opt/airflow/scripts/init.sh"),
        "neither copied into the image nor bind-mounted",
    ),
    "bash syntax error in a script": (
        lambda r: (r / "deploy" / "init.sh").write_text("#!/usr/bin/env bash\nif then fi\n"),
        "bash syntax error",
    ),
    "console script arguments rejected by its own parser": (
        lambda r: edit(r / "docker-compose.yaml", '"--n", "3"', '"--n", "three"'),
        "invalid int value: 'three'",
    ),
    "unknown command": (
        lambda r: edit(r / "docker-compose.yaml", 'entrypoint: ["mini-tool"]', 'entrypoint: ["mini-tol"]'),
        "command mini-tol is neither",
    ),
    "Airflow option that does not exist": (
        lambda r: edit(r / "docker-compose.yaml", "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__EXECUTER"),
        "Airflow has no option executer in [core]",
    ),
    "environment variable nothing reads": (
        lambda r: edit(
            r / "docker-compose.yaml",
            "MINI_SETTING: ${MINI_SETTING:?set it}",
            "MINI_SETTING: ${MINI_SETTING:?set it}\n    MINI_IGNORED: x",
        ),
        "MINI_IGNORED is read by nothing",
    ),
    "long-running service without healthcheck": (
        lambda r: edit(
            r / "docker-compose.yaml",
            '    healthcheck:\n      test: ["CMD", "curl", "--fail", "http://localhost:8080/api/v2/version"]\n',
            "",
        ),
        "service api: long-running service without a healthcheck",
    ),
    "waiting for health of a service without healthcheck": (
        lambda r: edit(
            r / "docker-compose.yaml",
            "      init:\n        condition: service_completed_successfully",
            "      tool:\n        condition: service_healthy",
        ),
        "waits for tool to be healthy, but it has no healthcheck",
    ),
    "unpinned external image": (
        lambda r: edit(r / "docker-compose.yaml", "image: postgres:15", "image: postgres:latest"),
        "must be pinned",
    ),
    "build context missing": (
        lambda r: edit(r / "docker-compose.yaml", "context: .", "context: ./nowhere"),
        "nowhere",
    ),
    "Dockerfile copies what does not exist": (
        lambda r: (r / "Dockerfile").write_text(DOCKERFILE + "COPY dags/ /opt/airflow/dags/\n"),
        "COPY source dags/ does not exist",
    ),
    "Dockerfile copies what .dockerignore excludes": (
        lambda r: (r / ".dockerignore").write_text(".env\ndeploy\n"),
        "COPY source deploy/ is excluded by .dockerignore",
    ),
    ".dockerignore lets .env into the image": (
        lambda r: (r / ".dockerignore").write_text(".venv\n"),
        "must exclude .env",
    ),
    "base image of another Airflow version": (
        lambda r: edit(r / "Dockerfile", "apache/airflow:3.3.2-python3.11", "apache/airflow:3.1.0-python3.11"),
        "does not match apache-airflow==3.3.2",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_compose_is_rejected(mini_repo: Path, case: str) -> None:
    break_it, expected = BROKEN[case]
    break_it(mini_repo)
    found = problems(mini_repo)
    assert found, f"{case}: the checker accepted it"
    assert any(expected in p for p in found), f"{case}: expected {expected!r} in {found}"


def test_missing_compose_binary_is_reported(mini_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert any("make system-deps" in p for p in problems(mini_repo))


def test_make_env_renders_secrets_and_references() -> None:
    example = (REPO / ".env.example").read_text()
    text, values = render(example, {"CONNECTIF_API_KEY": "abc:def"})
    assert values["CONNECTIF_API_KEY"] == "abc:def"
    for secret in ("AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "POSTGRES_PASSWORD"):
        assert len(values[secret]) >= 32, secret
    assert values["POSTGRES_PASSWORD"] in values["CONNECTIF_RATE_LIMIT_BACKEND"]
    assert values["ERP_DB_PASSWORD"] in values["ERP_URL"]
    assert not [line for line in text.splitlines() if "${" in line and not line.startswith("#")]
    from cryptography.fernet import Fernet

    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # raises if the key has the wrong format
    again = render(example, {})[1]
    assert again["AIRFLOW_JWT_SECRET"] != values["AIRFLOW_JWT_SECRET"]


def test_make_env_rejects_unknown_and_dangling_names() -> None:
    with pytest.raises(ValueError, match="unknown variable"):
        render("A=1\n", {"B": "2"})
    with pytest.raises(ValueError, match="does not define"):
        render("A=${NOPE}\n", {})
    with pytest.raises(ValueError, match="loop"):
        render("A=${B}\nB=${A}\n", {})


def test_every_example_variable_is_documented() -> None:
    docs = documented_variables((REPO / ".env.example").read_text())
    assert docs and all(docs.values()), [name for name, doc in docs.items() if not doc]


def test_make_env_cli_writes_private_file(tmp_path: Path) -> None:
    from deploy.make_env import main as make_env

    out = tmp_path / ".env"
    assert make_env(["--out", str(out), "CONNECTIF_HOST=https://api.connectif.cloud"]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert "CONNECTIF_HOST=https://api.connectif.cloud" in out.read_text()
    assert make_env(["--out", str(out)]) == 1  # never overwrites secrets silently
    assert make_env(["--out", str(out), "--force", "NOT_A_VARIABLE=1"]) == 2


def test_connections_json_carries_key_and_rate_limit_backend() -> None:
    import json

    from deploy.connections import connections

    conns = connections(
        {
            "CONNECTIF_API_KEY": "id:secret",
            "CONNECTIF_HOST": "http://emulator:8765",
            "CONNECTIF_RATE_LIMIT_BACKEND": "postgresql+psycopg2://u:p@db/connectif",
            "CONNECTIF_RATE_LIMIT_PER_MINUTE": "80",
        }
    )
    conn = conns["connectif_default"]
    assert (conn["conn_type"], conn["host"], conn["password"]) == ("connectif", "http://emulator:8765", "id:secret")
    assert json.loads(conn["extra"]) == {
        "rate_limit_backend": "postgresql+psycopg2://u:p@db/connectif",
        "rate_limit_per_minute": 80,
    }
    with pytest.raises(KeyError, match="CONNECTIF_API_KEY"):
        connections({"CONNECTIF_API_KEY": ""})


def test_setting_read_by_name_counts_as_read(mini_repo: Path) -> None:
    """``os.environ.get(f"MINI_{name.upper()}")`` with a known name ``"knob"`` reads MINI_KNOB."""
    (mini_repo / "deploy" / "settings.py").write_text(
        'import os\nDEFAULTS = {"knob": "1"}\n\n\ndef setting(name):\n'
        '    return os.environ.get(f"MINI_{name.upper()}") or DEFAULTS[name]\n'
    )
    edit(
        mini_repo / "docker-compose.yaml",
        "MINI_SETTING: ${MINI_SETTING:?set it}",
        "MINI_SETTING: ${MINI_SETTING:?set it}\n    MINI_KNOB: x",
    )
    assert problems(mini_repo) == []
    edit(mini_repo / "docker-compose.yaml", "MINI_KNOB: x", "MINI_KNOT: x")
    assert any("MINI_KNOT is read by nothing" in p for p in problems(mini_repo))


def test_worker_hostname_callable(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from deploy.hostname import worker_hostname

    monkeypatch.setenv("CONNECTIF_WORKER_HOSTNAME", "worker-a")
    assert worker_hostname() == "worker-a"
    monkeypatch.delenv("CONNECTIF_WORKER_HOSTNAME")
    assert worker_hostname() == socket.getfqdn()
