"""What the local database servers share: a folder per server, a free loopback port, a system user as root.

A server lives in one folder ``root`` (its data in ``root/data``, its log in ``root/server.log``, its pid
file) and listens on a free port of 127.0.0.1. It outlives the Python process that started it:
:meth:`LocalServer.running` finds the server already running on a folder from its pid file, so that
``start`` reuses it (a second ``make demo`` finds the first one's). PostgreSQL and MariaDB both refuse to run
as root: as root, the server runs as the database's system user (created when missing), who is given the
folder and a way to it (:func:`let_user_reach`). :mod:`localdb.postgres` and :mod:`localdb.mariadb` keep only
what is specific to their database: initialising, starting, the pid file's format, URLs, SQL.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

LOOPBACK = "127.0.0.1"


class LocalServerError(RuntimeError):
    """A server could not be found, initialised or started; the message says what to do."""


def free_port(host: str = LOOPBACK) -> int:
    """A port free on ``host`` right now (bound to 0 and released): the one helper the demo, the deployment
    checks and the tests use."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def system_user(name: str) -> str | None:
    """The system user the server runs as when we are root (created when missing); ``None``: ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)  # fmt: skip
    return name


def run_as(args: list[str], user: str | None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``args`` as ``user`` (``None``: ourselves), capturing its output."""
    cmd = ["runuser", "-u", user, "--", *args] if user else args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def let_user_reach(root: Path, user: str) -> None:
    """Give the server user ``root`` (it becomes its owner) and a way to it.

    Only what blocks that one user changes, and only for it: a parent it cannot traverse (a private checkout,
    a ``mktemp -d`` folder: mode 0700) gets the POSIX ACL entry ``user:USER:--x`` (traverse, not list), where
    ``chmod o+x`` would open it to every user of the machine. The data stays in the checkout (``make
    demo-clean`` and ``--fresh`` still remove it; nothing is left elsewhere to be forgotten). Parents it
    already traverses (``/tmp``; the checkout of a demo started before) are left as they are.
    """
    if run_as(["test", "-x", str(root.parent)], user).returncode != 0:
        for parent in reversed(root.parents):  # "/" first: a folder is reachable once all above it are
            if run_as(["test", "-x", str(parent)], user).returncode == 0:
                continue
            setfacl = shutil.which("setfacl")
            if setfacl is None:
                raise LocalServerError(
                    f"the {user} system user, which runs the server as you are root, cannot reach {parent}: "
                    "install Debian's acl package (`make system-deps`) so that it can be granted traverse "
                    f"rights there alone, or put the server's folder where it can reach (e.g. under /tmp)"
                )
            granted = subprocess.run([setfacl, "-m", f"u:{user}:x", str(parent)], capture_output=True, text=True)
            if granted.returncode != 0:
                raise LocalServerError(f"cannot let {user} traverse {parent}: {granted.stderr.strip()}")
    os.chown(root, pwd.getpwnam(user).pw_uid, -1)


def prepare(root: Path, user_name: str) -> str | None:
    """Make the folder ``root``; as root, give it to the system user ``user_name`` and return that user."""
    root.mkdir(parents=True, exist_ok=True)
    user = system_user(user_name)
    if user:
        let_user_reach(root, user)
    return user


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs; reaps it when it is our child that exited (a zombie answers ``kill 0``)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:  # not our child: started by pg_ctl or by another process (a reused server)
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by the server user
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def check_database_name(name: str) -> None:
    """Database names go into SQL text: letters, digits and underscores only."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: use letters, digits and underscores")


@dataclass(frozen=True)
class LocalServer(ABC):
    """A running server: where its files are, its port, and URLs to its databases."""

    #: What the messages call it ("PostgreSQL", "MariaDB").
    kind: ClassVar[str]

    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @staticmethod
    @abstractmethod
    def running_port(root: Path) -> int | None:
        """The port of the server running on the folder ``root`` (from its pid file), or ``None``."""

    @classmethod
    def running(cls, root: Path) -> Self | None:
        """The server running on the folder ``root``, or ``None`` (e.g. to stop it before deleting ``root``)."""
        root = root.resolve()
        port = cls.running_port(root)
        return None if port is None else cls(root, port)

    def is_running(self) -> bool:
        return self.running_port(self.root) == self.port

    @abstractmethod
    def url(self, database: str = "", driver: str = "") -> str:
        """SQLAlchemy URL of ``database`` (each server has its own defaults)."""

    @abstractmethod
    def create_database(self, name: str) -> str:
        """Create ``name`` unless it exists; return its URL."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server; nothing happens if it is not running."""


def main(
    argv: list[str] | None,
    *,
    server: type[LocalServer],
    start: Callable[[Path], LocalServer],
    description: str,
    default_database: str,
) -> int:
    """``python -m localdb.<db> start|stop|url ROOT [--database NAME]``."""
    parser = argparse.ArgumentParser(prog=f"python -m {server.__module__}", description=description)
    parser.add_argument("action", choices=["start", "stop", "url"])
    parser.add_argument("root", type=Path, help="the server's folder (its data is ROOT/data)")
    parser.add_argument("--database", default=default_database, help="with start/url: create and print this database")
    args = parser.parse_args(argv)
    if args.action == "start":
        started = start(args.root)
        database = args.database
        print(started.create_database(database) if database != default_database else started.url(database))
        return 0
    found = server.running(args.root)
    if found is None:
        print(f"no {server.kind} is running on {args.root}", file=sys.stderr)
        return 1 if args.action == "url" else 0
    if args.action == "stop":
        found.stop()
    else:
        print(found.url(args.database))
    return 0
