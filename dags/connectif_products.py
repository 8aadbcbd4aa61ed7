"""Airflow DAG, daily: the product catalogue from the ERP into Connectif (bulk imports of new and changed rows)."""

from __future__ import annotations

from connectif_dags.bulk import bulk_sync_dag

DOC = """
### ERP → Connectif products, daily

Same flow as `connectif_contacts`, for the catalogue (mapping `products.yaml`: `productId`, `name`,
`productDetailUrl` and `unitPrice` are required; categories become `/` paths joined by `|`; product URLs
must be inside the account's authorised domains or Connectif rejects the row).

1. **extract** — extract, shape, validate (rejected rows with their reason go to the rejected store),
   detect changes against the state store, chunk new and changed rows into CSV files; an abnormal plan
   waits in **approve_upload** for a person (guardrail, README "Alerts and guardrails").
2. **import_file** — one deferrable Connectif import per file, pool `connectif_imports`.
3. **report** — commit the rows Connectif confirmed; its error report's rows go again next run.
4. **publish** — Asset `connectif://products`.

Purchases need their products in Connectif: this DAG runs before the hourly purchases of the morning,
and the purchases DAG upserts any product still missing (E0102) before sending the purchase.

**Params** — `dry_run` (plan only, nothing written) and `full_resync` (send every valid row again).

**No backfills**: a run syncs the catalogue as it is now, whatever its date, so Airflow refuses a backfill.
Trigger a run (with `full_resync` to send every product again).
"""

dag = bulk_sync_dag(
    "products",
    schedule="30 1 * * *",
    doc_md=DOC,
    description="Daily sync of the ERP catalogue into Connectif products",
)
