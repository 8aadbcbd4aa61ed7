"""A small DAG that proves the distributed topology (``python -m deploy.distributed --scenario probe``).

Mapped tasks spread over the Celery workers, then one deferrable Connectif import per file waits in the
triggerer, against the emulator, through the shared rate-limit bucket; then mapped read-backs on both
workers spend more requests than the account's per-minute limit, so that only a bucket shared by every
worker process keeps the emulator from answering 429. The real DAGs of ``dags/`` are run by the default
scenario; this one isolates the topology from their logic.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.operators.connectif import ConnectifImportOperator

FILES = 4
ROWS_PER_FILE = 200
#: Read-backs per file: FILES * READS_PER_FILE (120) requests, above the account's 100 per minute.
READS_PER_FILE = 30


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

    @task
    def read_back(summary: dict) -> int:
        """Fetch contacts of one import through the API: a burst that the shared bucket must pace."""
        part = int(Path(summary["file_path"]).stem.rsplit("-", 1)[1])
        hook = ConnectifHook()
        missing = [
            probe_email(part, row) for row in range(READS_PER_FILE) if hook.get_contact(probe_email(part, row)) is None
        ]
        if missing:
            raise ValueError(f"contacts missing in Connectif after the import: {missing}")
        return READS_PER_FILE

    imports = ConnectifImportOperator.partial(
        task_id="import_contacts",
        import_type="contacts",
        override_existing=True,
        poll_interval=2.0,
        pool="connectif_imports",
    ).expand(file_path=write_contacts.expand(part=list(range(FILES))))
    read_back.expand(summary=imports.output)
