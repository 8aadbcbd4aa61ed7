"""Airflow DAG, daily: contacts from the ERP into Connectif (bulk CSV imports of new and changed rows)."""

from __future__ import annotations

from connectif_dags.bulk import bulk_sync_dag

DOC = """
### ERP → Connectif contacts, daily

1. **extract** reads the customers through the contacts mapping (`include/connectif_sync/mappings/contacts.yaml`,
   or your own in the folder of the Variable `connectif_mappings_dir`), shapes them into Connectif's formats
   (emails lower-cased, phones in international format, dates `yyyy-mm-dd`...), sets aside every row
   Connectif would reject (**rejected store**, with key, field and reason), compares each row with what
   Connectif already confirmed (**state store**) and writes only **new and changed** rows into CSV files
   of at most ~50 MB. The **guardrail** then compares the plan with what Connectif confirmed and with the
   last runs; an abnormal plan (e.g. every first name blanked) uploads nothing and waits in
   **approve_upload** for a person (*Required actions*); a normal run skips it (README "Alerts and guardrails").
2. **import_file** — one Connectif import per file (dynamic task mapping), waiting **deferred** in the
   triggerer, in pool `connectif_imports` (10 slots = the account's 10 queued imports). Every request
   takes a token from the deployment's shared rate-limit bucket (90/min by default).
3. **report** commits exactly the rows Connectif confirmed; rows in an import's error report stay
   pending and are sent again next run. The run summary is in the logs and in XCom (`summary`).
4. **publish** emits the Asset `connectif://contacts`.

**Params** — `dry_run`: plan only (rows, files, bytes, API requests), nothing written anywhere.
`full_resync`: send every valid row again, even unchanged ones.

**No backfills**: a run syncs the ERP's customers as they are now, whatever its date; a backfill would
only repeat that once per past date, so Airflow refuses it. Trigger a run (with `full_resync` to send all).
"""

dag = bulk_sync_dag(
    "contacts",
    schedule="0 2 * * *",
    doc_md=DOC,
    description="Daily sync of ERP customers into Connectif contacts",
)
