"""How fast the monitoring pages answer with a big state store: 1,000,000 rejected rows and 1,000 runs on the
embedded PostgreSQL (the deployment's state store), target < 300 ms per page.

Every page is called through the real app (FastAPI routes, Airflow's JWT check and auth manager, HTML
rendering) with an in-process client; Airflow's metadata DB is a SQLite file in a temporary AIRFLOW_HOME.
Baseline of the same run: the same deep page read with ``OFFSET`` instead of the keyset (what the indexes and
keyset pagination avoid). Prints a Markdown table for bench/README.md.

    python bench/ui_bench.py [--rejected 1000000] [--runs 1000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOME = Path(tempfile.mkdtemp(prefix="connectif-ui-bench-"))
os.environ["AIRFLOW_HOME"] = str(HOME / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{HOME / 'airflow.db'}"
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"

RUNS_PER_OBJECT_KEPT = 5  # the state store keeps the rejected rows of the last 5 runs per object


def populate(url: str, rejected: int, runs: int) -> dict[str, Any]:
    """1,000 Airflow runs in the history (all objects), ``rejected`` rows over the 5 kept contacts runs."""
    import sqlalchemy as sa

    from connectif_sync.contract import ImportOutcome, RunSummary, SyncObject
    from connectif_sync.store import StateStore

    objs = [o for o in SyncObject]
    with StateStore(url) as store:
        lib_runs = []
        for i in range(RUNS_PER_OBJECT_KEPT):
            lib = f"connectif_contacts/scheduled__{i:04d}/1"
            store.begin_run("contacts", "full", None, lib)
            store.finish_run(lib, files=[], high_water=None, report={})
            lib_runs.append(lib)
        t0 = time.perf_counter()
        for i in range(runs):
            obj = objs[i % len(objs)]
            s = RunSummary(
                dag_id=obj.dag_id, run_id=f"scheduled__{i:04d}", object=obj, sent=1000 + i, changed=i % 50,
                unchanged=100_000, rejected=rejected // RUNS_PER_OBJECT_KEPT, api_requests=40,
                library_run_id=f"connectif_contacts/scheduled__{i % RUNS_PER_OBJECT_KEPT:04d}/1",
                rejected_by_reason={"_email: invalid email address": 150_000, "_points: not an integer": 50_000},
                import_outcomes=[ImportOutcome(f"imp-{i}-{j}", "finished", 50_000, 49_990, 10, 30.0)
                                 for j in range(3)],
            )  # fmt: skip
            store.record_run_summary(s)
        history_s = time.perf_counter() - t0
        # the rejected rows: COPY in one go (a sync run writes them through record_rejected in batches)
        raw = store.engine.raw_connection()
        t0 = time.perf_counter()
        try:
            buf = io.StringIO()
            per_run = rejected // RUNS_PER_OBJECT_KEPT
            for r, lib in enumerate(lib_runs):
                for i in range(per_run):
                    n = r * per_run + i
                    reason = "invalid email address" if n % 4 else "not an integer"
                    field = "_email" if n % 4 else "_points"
                    buf.write(f"{lib}\tcontacts\tuser{n:07d}@example.com\tid={n}\t{field}\t{reason}\tbad{n}\t"
                              "2026-01-01 00:00:00\n")  # fmt: skip
            buf.seek(0)
            cur = raw.cursor()
            cur.copy_expert(
                "COPY connectif_sync_rejected (run_id, object, key, source_ref, field, reason, value, recorded_at) "
                "FROM STDIN",
                buf,
            )
            raw.commit()
        finally:
            raw.close()
        with store.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE connectif_sync_rejected"))
            conn.execute(sa.text("ANALYZE connectif_sync_run_history"))
        copy_s = time.perf_counter() - t0
    return {"latest": lib_runs[-1], "middle": lib_runs[2], "history_s": history_s, "copy_s": copy_s}


def timed(fn: Any, repeat: int) -> tuple[float, float]:
    """(median, max) milliseconds of ``repeat`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def _client() -> Any:
    """A client of the plugin's app with a viewer's token, as the API server would serve it."""
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from connectif_provider.ui.app import app

    manager = init_auth_manager()
    token = manager.generate_jwt(SimpleAuthManagerUser(username="bench", role="viewer"))  # type: ignore[arg-type]
    root = FastAPI()
    root.mount("/connectif", app)
    return TestClient(root, headers={"Authorization": f"Bearer {token}"})


def _measure(client: Any, engine: Any, info: dict[str, Any], repeat: int) -> tuple[list[Any], Any]:
    """Each page timed ``repeat`` times, and the baseline: the deep page read with OFFSET, SQL alone."""
    import sqlalchemy as sa

    latest = info["latest"]
    with engine.connect() as conn:
        mid_id = conn.execute(
            sa.text("SELECT id FROM connectif_sync_rejected WHERE run_id = :r ORDER BY id OFFSET 150000 LIMIT 1"),
            {"r": latest},
        ).scalar_one()

    def get(path: str) -> Any:
        def call() -> None:
            resp = client.get(path)
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])

        return call

    def offset_page() -> None:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, key, source_ref, field, reason, value FROM connectif_sync_rejected "
                        "WHERE object = 'contacts' AND run_id = :r ORDER BY id OFFSET 150000 LIMIT 50"),
                {"r": latest},
            ).all()  # fmt: skip
        assert len(rows) == 50

    run_tab = "/connectif/runs/connectif_contacts/scheduled__0996"
    deep = f"/connectif/rejected?object=contacts&after={mid_id}"
    both = f"/connectif/rejected?object=contacts&run={info['middle']}&field=_email&reason=invalid+email+address"
    pages = [
        ("Connectif page `/connectif/` (6 objects x 30 runs, counts, freshness, account)", get("/connectif/")),
        ("run tab `/connectif/runs/connectif_contacts/<run>`", get(run_tab)),
        ("rejected rows, first page of the latest run", get("/connectif/rejected?object=contacts")),
        ("rejected rows, page at row 150,000 (keyset `after=`)", get(deep)),
        ("rejected rows, filter reason (1 in 4 rows)",
         get("/connectif/rejected?object=contacts&reason=not+an+integer")),
        ("rejected rows, filter field + reason, older run", get(both)),
        ("rejected rows, key search (prefix)", get("/connectif/rejected?object=contacts&key=user09999*")),
    ]  # fmt: skip
    return [(name, *timed(fn, repeat)) for name, fn in pages], timed(offset_page, repeat)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rejected", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=1_000)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()

    from localdb.postgres import FAST_SETTINGS, start

    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True)
    server = start(HOME / "pg", settings=FAST_SETTINGS)
    try:
        url = server.create_database("ui_bench")
        os.environ["CONNECTIF_STATE_URL"] = url
        info = populate(url, args.rejected, args.runs)

        import sqlalchemy as sa

        client = _client()
        engine = sa.create_engine(url)
        results, base = _measure(client, engine, info, args.repeat)
        t0 = time.perf_counter()
        csv_rows = client.get(f"/connectif/rejected.csv?object=contacts&run={info['latest']}").text.count("\n") - 1
        csv_s = time.perf_counter() - t0
        load = os.getloadavg()
        print(f"\nstate store: PostgreSQL {url.rsplit('@', 1)[-1]}; {args.rejected:,} rejected rows "
              f"({args.rejected // RUNS_PER_OBJECT_KEPT:,} per kept run), {args.runs:,} runs in the history "
              f"(written in {info['history_s']:.1f} s); load average {load[0]:.1f}\n")  # fmt: skip
        print("| page | median ms | max ms | target 300 ms |")
        print("|---|---|---|---|")
        for name, med, worst in results:
            print(f"| {name} | {med:.0f} | {worst:.0f} | {'met' if worst < 300 else 'MISSED'} |")
        print(f"| baseline: the row-150,000 page with OFFSET (SQL only) | {base[0]:.0f} | {base[1]:.0f} | |")
        keyset = results[3][1]
        print(f"\nratio keyset page (whole route) / OFFSET query alone: {keyset / base[0]:.2f}")
        print(f"CSV download of the latest run: {csv_rows:,} rows in {csv_s:.1f} s ({csv_rows / csv_s:,.0f} rows/s)")
        ok = all(worst < 300 for _, _, worst in results)
        engine.dispose()
        return 0 if ok else 1
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
