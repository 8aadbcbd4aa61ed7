"""The demo's process handling: stopping a process stops its whole group, and the sweep finds escapees."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from demo.processes import MARKER_VAR, ManagedProcess, marked_processes, sweep

# A parent that starts a child in its own group and a grandchild that leaves for a session of its own.
SCRIPT = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
print("started", flush=True)
time.sleep(300)
"""


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_stop_ends_the_group_and_sweep_ends_what_escaped_it(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    log = tmp_path / "p.log"
    proc = ManagedProcess("tree", [sys.executable, "-c", SCRIPT], env={**os.environ, MARKER_VAR: marker}, log_path=log)
    proc.start()
    try:
        assert wait_for(lambda: "started" in log.read_text() and len(marked_processes(marker)) == 3)
        escaped = [p for p in marked_processes(marker) if os.getpgid(p) != proc.pid]
        assert len(escaped) == 1

        proc.stop(timeout=10)

        assert not proc.alive()
        assert marked_processes(marker) == escaped  # the group is gone, the escapee is not
        assert sweep(marker) == escaped
        assert wait_for(lambda: marked_processes(marker) == [])
    finally:
        proc.stop(timeout=5)
        sweep(marker)
