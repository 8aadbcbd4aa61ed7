"""Both local servers, through their shared lifecycle (:mod:`localdb.server`): start, reuse, CLI, stop.

As root the server runs as a system user; its folder may sit inside a private folder (a ``mktemp -d``
checkout, mode 0700). The server user alone is let through, by an ACL entry: nobody else gains anything.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from localdb import mariadb, postgres, server
from localdb.server import LocalServer

SERVERS: dict[str, tuple[Callable[..., Any], type[LocalServer], str]] = {
    "postgres": (postgres.start, postgres.LocalPostgres, postgres.SERVER_USER),
    "mariadb": (mariadb.start, mariadb.LocalMariaDB, mariadb.SERVER_USER),
}
FAST = {"postgres": postgres.FAST_SETTINGS, "mariadb": {**mariadb.FAST_SETTINGS, "innodb_buffer_pool_size": "64M"}}


def _select_one(url: str) -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT 1")).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.mysql
@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_a_server_in_a_private_folder_is_reached_by_its_user_alone(tmp_path: Path, kind: str) -> None:
    start, server_class, user = SERVERS[kind]
    private = tmp_path / "checkout"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    root = private / ".demo" / kind
    first = start(root, settings=FAST[kind])
    try:
        assert first.is_running()
        url = first.create_database("erp")
        assert _select_one(url) == 1
        assert start(root).port == first.port, "a running server is reused, whatever the call says"
        found = server_class.running(root)
        assert found == first
    finally:
        first.stop()
    assert not first.is_running()
    assert server_class.running(root) is None
    mode = private.stat().st_mode
    assert not mode & (stat.S_IRWXO | stat.S_IRGRP | stat.S_IWGRP), "no other user gains a right on the checkout"
    if os.geteuid() == 0:
        acl = subprocess.run(["getfacl", "-p", str(private)], capture_output=True, text=True, check=True).stdout
        assert f"user:{user}:--x" in acl.splitlines()
        assert "group::---" in acl.splitlines() and "other::---" in acl.splitlines()
        assert root.stat().st_uid == pwd.getpwnam(user).pw_uid


@pytest.mark.mysql
@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_the_command_line_starts_prints_urls_and_stops(tmp_path: Path, kind: str) -> None:
    root = tmp_path / kind
    cli = [sys.executable, "-m", f"localdb.{kind}"]
    try:
        started = subprocess.run([*cli, "start", str(root), "--database", "erp"], capture_output=True, text=True,
                                 timeout=300)  # fmt: skip
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url.startswith(("postgresql+psycopg2://", "mysql+pymysql://")) and "/erp" in url
        assert _select_one(url) == 1
        printed = subprocess.run([*cli, "url", str(root), "--database", "erp"], capture_output=True, text=True)
        assert printed.stdout.strip() == url
    finally:
        stopped = subprocess.run([*cli, "stop", str(root)], capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    gone = subprocess.run([*cli, "url", str(root)], capture_output=True, text=True)
    assert gone.returncode == 1 and "is running" in gone.stderr
    shutil.rmtree(root)


def test_the_server_user_is_refused_a_parent_it_cannot_traverse_without_acl_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user")
    private = tmp_path / "checkout"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    (private / "pg").mkdir()
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    with pytest.raises(server.LocalServerError, match=r"cannot reach .*install Debian's acl package"):
        server.let_user_reach(private / "pg", postgres.SERVER_USER)
    assert private.stat().st_mode & 0o777 == 0o700, "nothing is opened instead"
