"""A small DAG that proves the distributed topology (``python -m deploy.distributed --scenario probe``).

Mapped tasks spread over the Celery workers, then one deferrable Connectif import per file waits in the
triggerer, against the emulator, through the shared rate-limit bucket. The real DAGs of ``dags/`` are run by
the default scenario; this one isolates the topology from their logic.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from connectif_provider.operators.connectif import ConnectifImportOperator

FILES = 4
ROWS_PER_FILE = 200


def probe_email(part: int, row: int) -> str:
    """The contacts the probe sends; the runner checks that the emulator holds exactly these."""
    return f"probe-{part}-{row}@example.com"


with DAG(
    dag_id="connectif_deploy_probe",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["connectif", "deploy-test"],
    doc_md=__doc__,
):

    @task
    def write_contacts(part: int) -> str:
        """One contacts CSV per mapped task, in the run's shared directory."""
        out = Path(os.environ["CONNECTIF_PROBE_DIR"]) / f"contacts-{part}.csv"
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["_email", "_name"])
            for row in range(ROWS_PER_FILE):
                writer.writerow([probe_email(part, row), f"Probe {part}-{row}"])
        time.sleep(3)  # long enough for the mapped tasks to overlap and land on both workers
        return str(out)

    ConnectifImportOperator.partial(
        task_id="import_contacts",
        import_type="contacts",
        override_existing=True,
        poll_interval=2.0,
        pool="connectif_imports",
    ).expand(file_path=write_contacts.expand(part=list(range(FILES))))
