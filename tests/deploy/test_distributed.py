"""``make test-distributed`` inside the suite: the compose topology without Docker (see deploy/distributed.py).

The real contacts, products and purchases DAGs run on two Celery workers against the emulator; measured at
about 4 minutes here (of the 90 that CI allows for everything), so it runs in ``make test``.

It runs as a subprocess, like ``make test-distributed``, so that its own signal handling and clean-up are
what is tested; its exit code carries every assertion (workers, triggerer restart, rate limit, data).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from deploy.distributed import REPO


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_distributed_topology() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.distributed"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    output = f"{proc.stdout}\n{proc.stderr}"
    print(output)  # the phase durations and findings, visible with -s or on failure
    assert proc.returncode == 0, output[-6000:]
    for finding in (
        "OK tasks per worker",
        "OK deferred across the triggerer restart",
        "0 answered 429",
        "OK Connectif holds exactly the",  # contacts
        "sendable paid orders as purchases",
    ):
        assert finding in proc.stdout, output[-6000:]
    assert "swept" not in proc.stdout, "processes outlived their group stop: " + output[-2000:]
