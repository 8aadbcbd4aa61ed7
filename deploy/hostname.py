"""``[core] hostname_callable`` for several Celery workers on one machine (``make test-distributed``).

Airflow records on each task instance the hostname of the worker that ran it. Two worker processes on the
same machine share the machine's name, so the distributed run gives each one ``CONNECTIF_WORKER_HOSTNAME``
and points ``AIRFLOW__CORE__HOSTNAME_CALLABLE`` here; other components fall back to the machine's name.
"""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    """This process's worker name if it has one, else the fully qualified domain name."""
    return os.environ.get("CONNECTIF_WORKER_HOSTNAME") or socket.getfqdn()
