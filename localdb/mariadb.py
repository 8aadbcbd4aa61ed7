"""A real MariaDB (MySQL) server for the tests and the benches, from Debian's ``mariadb-server`` package.

``make system-deps`` installs the package; this module never uses its system service. It initialises a data
dir of its own with ``mariadb-install-db``, starts ``mariadbd`` on a free port of 127.0.0.1 (socket in the
same folder), and creates a password-less TCP user ``connectif`` with every privilege (a throw-away server on
loopback). MariaDB refuses to run as root: as root, the server runs as the system user ``mysql`` (the
package's; created with ``useradd`` when missing), as :mod:`localdb.postgres` does with ``postgres``.

Use::

    server = start(Path("/tmp/mdb"), settings=FAST_SETTINGS)   # reuses the server already running there
    url = server.create_database("erp")   # mysql+pymysql://connectif@127.0.0.1:PORT/erp?charset=utf8mb4
    server.stop()

or from a shell: ``python -m localdb.mariadb start DIR`` (prints the URL) / ``stop DIR`` / ``url DIR``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from localdb import server as base
from localdb.server import LOOPBACK, LocalServer, LocalServerError, check_database_name, free_port, pid_alive

SERVER_USER = "mysql"
DB_USER = "connectif"

#: Settings for a throw-away server (tests, benches): commits are not flushed, no doublewrite buffer.
FAST_SETTINGS: dict[str, str] = {
    "innodb_flush_log_at_trx_commit": "0",
    "innodb_doublewrite": "0",
    "sync_binlog": "0",
    "innodb_buffer_pool_size": "256M",
}


class MariaDBError(LocalServerError):
    """The server could not be found, initialised or started; the message says what to do."""


def _binary(name: str) -> str:
    for folder in ("", "/usr/sbin/", "/usr/bin/"):
        path = shutil.which(name) if not folder else (folder + name if Path(folder + name).exists() else None)
        if path:
            return path
    raise MariaDBError(f"{name} not found: install Debian's mariadb-server (`make system-deps`, as root)")


def client() -> str:
    """The ``mariadb`` (``mysql``) command-line client."""
    try:
        return _binary("mariadb")
    except MariaDBError:
        return _binary("mysql")


def _running_port(root: Path) -> int | None:
    """The port of the server running on ``root`` (from the pid and port files we write), or ``None``."""
    try:
        pid = int((root / "mariadbd.pid").read_text().strip())
        port = int((root / "port").read_text().strip())
    except (OSError, ValueError):
        return None
    return port if pid_alive(pid) else None


@dataclass(frozen=True)
class LocalMariaDB(LocalServer):
    """A running server: where its files are, its port, and URLs to its databases."""

    kind = "MariaDB"

    @staticmethod
    def running_port(root: Path) -> int | None:
        return _running_port(root)

    @property
    def socket(self) -> Path:
        return self.root / "mariadbd.sock"

    def url(self, database: str = "", driver: str = "pymysql") -> str:
        """SQLAlchemy URL (utf8mb4: the full Unicode range, as the sample ERP has names in every script)."""
        scheme = f"mysql+{driver}" if driver else "mysql"
        return f"{scheme}://{DB_USER}@{LOOPBACK}:{self.port}/{database}?charset=utf8mb4"

    def client_args(self, database: str = "") -> list[str]:
        """The command line of the ``mariadb`` client connected to ``database`` over TCP."""
        args = [client(), "--protocol=TCP", "-h", LOOPBACK, "-P", str(self.port), "-u", DB_USER]
        return [*args, database] if database else args

    def sql(self, statement: str, database: str = "") -> str:
        """Run one statement with the command-line client; its tab-separated output."""
        done = subprocess.run([*self.client_args(database), "--batch", "-e", statement], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        if done.returncode != 0:
            raise MariaDBError(f"{statement[:80]!r} failed on port {self.port}: {done.stderr.strip()}")
        return done.stdout

    def create_database(self, name: str) -> str:
        """Create ``name`` (utf8mb4, binary-free general collation) unless it exists; return its URL."""
        check_database_name(name)
        self.sql(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS `{name}`")

    def stop(self, timeout: float = 60) -> None:
        """Stop the server (SIGTERM, a clean shutdown) and wait for it. Nothing happens if it is not running."""
        if _running_port(self.root) is None:
            return
        pid = int((self.root / "mariadbd.pid").read_text().strip())
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.1)
        os.kill(pid, 9)
        pid_alive(pid)


def _wait_ready(server: LocalMariaDB, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            tail = server.log_file.read_text(errors="replace")[-2000:] if server.log_file.exists() else ""
            raise MariaDBError(f"mariadbd exited with {proc.returncode} on port {server.port}:\n{tail}")
        ping = subprocess.run([client(), f"--socket={server.socket}", "-u", "root", "--batch", "-e", "SELECT 1"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        if ping.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise MariaDBError(f"mariadbd did not answer within the time allowed; see {server.log_file}")
        time.sleep(0.2)


def start(root: Path, *, port: int | None = None, settings: dict[str, str] | None = None) -> LocalMariaDB:
    """Start (or reuse) the server whose data lives in ``root/data``; initialise it on first use."""
    root = root.resolve()
    found = LocalMariaDB.running(root)
    if found is not None:
        return found
    user = base.prepare(root, SERVER_USER)
    data = root / "data"
    if not (data / "mysql").exists():
        if data.exists():
            shutil.rmtree(data)
        args = [_binary("mariadb-install-db"), f"--datadir={data}", "--auth-root-authentication-method=normal",
                "--skip-test-db", "--skip-name-resolve"]  # fmt: skip
        if user:
            args.append(f"--user={user}")
        init = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if init.returncode != 0:
            raise MariaDBError(f"mariadb-install-db failed in {data}: {(init.stderr or init.stdout).strip()[-2000:]}")
    port = port or free_port()
    server = LocalMariaDB(root, port)
    options = {
        "datadir": str(data),
        "port": str(port),
        "bind-address": LOOPBACK,
        "socket": str(server.socket),
        "pid-file": str(root / "mariadbd.pid"),
        "log-error": str(server.log_file),
        "skip-name-resolve": "",
        "character-set-server": "utf8mb4",
        "collation-server": "utf8mb4_unicode_ci",
        "max_connections": "200",
        **(settings or {}),
    }
    args = [_binary("mariadbd"), "--no-defaults", *(f"--{k}={v}" if v else f"--{k}" for k, v in options.items())]
    if user:
        args.append(f"--user={user}")
    (root / "port").write_text(str(port))
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    _wait_ready(server, proc, time.monotonic() + 90)
    grant = (f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1'; "
             f"GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'127.0.0.1' WITH GRANT OPTION;")  # fmt: skip
    made = subprocess.run([client(), f"--socket={server.socket}", "-u", "root", "--batch", "-e", grant],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    if made.returncode != 0:
        raise MariaDBError(f"could not create the {DB_USER} user: {made.stderr.strip()}")
    return server


def main(argv: list[str] | None = None) -> int:
    return base.main(argv, server=LocalMariaDB, start=start, description=__doc__.split("\n")[0],
                     default_database="")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
