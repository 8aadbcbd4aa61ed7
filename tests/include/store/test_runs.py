"""The run history and the rejected-rows browsing queries of the state store, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from connectif_sync.contract import ImportOutcome, RunState, RunSummary, SyncObject
from connectif_sync.state import REJECTED_BROWSE_INDEXES, StateStore, metadata, run_history_table


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite'}"
    return str(request.getfixturevalue("pg_database"))


def _summary(run: str, sent: int, **kw: object) -> RunSummary:
    return RunSummary(dag_id="connectif_products", run_id=run, object=SyncObject.PRODUCTS, sent=sent, **kw)  # type: ignore[arg-type]


def test_summaries_round_trip_and_history_is_newest_first(url: str) -> None:
    with StateStore(url) as store:
        for i in range(35):
            store.record_run_summary(_summary(f"run{i:02d}", sent=i, rejected=2 * i))
        full = _summary(
            "run34", 34, rejected=68, state=RunState.INCOMPLETE, api_requests=12, rejected_by_reason={"a: b": 3},
            import_outcomes=[ImportOutcome("i1", "finished", 10, 9, 1, 2.5, "/f.csv", [{"line": 2, "field": "x",
                                                                                        "error": "bad"}])],
            extra={"window": {"from": "a", "to": "b"}},
        )  # fmt: skip
        store.record_run_summary(full)  # a re-run of the report replaces the record
    with StateStore(url, readonly=True) as store:
        assert store.run_summary("connectif_products", "run34") == full
        assert store.run_summary("connectif_products", "nope") is None
        history = store.run_history("products", limit=30)
        assert [h.run_id for h in history] == [f"run{i:02d}" for i in range(34, 4, -1)]
        assert (history[0].sent, history[0].rejected, history[0].state, history[0].api_requests) == (
            34, 68, "incomplete", 12
        )  # fmt: skip
        assert store.run_history("contacts") == []


def test_xcom_dict_is_compatible_and_reads_back() -> None:
    s = _summary("r", 5, dry_run=True, state=RunState.PLANNED, plan={"api_requests": 3}, extra={"marked_used": {}})
    data = s.as_dict()
    assert data["imports"] == 0 and data["marked_used"] == {} and data["object"] == "products"
    assert RunSummary.from_dict(data) == s
    old = {"object": "contact_erasure", "sent": 2, "rejected": 1, "imports": 0, "pending": 3}  # before RunSummary
    back = RunSummary.from_dict(old)
    assert back.object is SyncObject.CONTACT_ERASURE and back.dag_id == "connectif_contact_erasure"
    assert back.extra == {"pending": 3} and back.sent == 2


def test_rejected_pages_follow_the_keyset(url: str) -> None:
    with StateStore(url) as store:
        for run in ("r1", "r2"):
            store.begin_run("contacts", "full", None, run)
            store.record_rejected(
                "contacts", run,
                [{"key": f"k{i:04d}", "source_ref": f"id={i}", "field": "f" if i % 2 else "g",
                  "reason": f"reason {i % 3}", "value": None} for i in range(230)],
            )  # fmt: skip
            store.finish_run(run, files=[], high_water=None, report={})
        assert store.rejected_run_ids("contacts") == ["r2", "r1"]
        seen: list[str] = []
        after = None
        while True:
            page = store.rejected_page("contacts", "r1", after_id=after, limit=100)
            seen += [r["key"] for r in page]
            if len(page) < 100:
                break
            after = page[-1]["id"]
        assert seen == [f"k{i:04d}" for i in range(230)]
        odd = store.rejected_page("contacts", "r1", field="f", reason="reason 0", limit=1000)
        assert [r["key"] for r in odd] == [f"k{i:04d}" for i in range(230) if i % 2 and i % 3 == 0]
        assert [r["key"] for r in store.rejected_page("contacts", "r2", key="k012*")] == [f"k012{i}" for i in range(10)]
        assert len(list(store.iter_rejected("contacts", "r2", page_size=64))) == 230


def test_browse_indexes_are_added_to_an_existing_store(url: str) -> None:
    engine = sa.create_engine(url)
    metadata.create_all(engine, tables=[t for t in metadata.sorted_tables if t is not run_history_table])
    for index in REJECTED_BROWSE_INDEXES:
        index.drop(engine)
    with engine.begin() as conn:  # retired since (raw SQL: an Index object would join the shared metadata)
        conn.exec_driver_sql(
            "CREATE INDEX IF NOT EXISTS ix_connectif_sync_rejected_run ON connectif_sync_rejected (object, run_id)"
        )
    engine.dispose()
    with StateStore(url) as store:  # an older store: the new table and indexes are created on open
        names = {i["name"] for i in sa.inspect(store.engine).get_indexes("connectif_sync_rejected")}
        assert {i.name for i in REJECTED_BROWSE_INDEXES} <= names
        assert "ix_connectif_sync_rejected_run" not in names  # a prefix of ix_connectif_sync_rejected_run_id
        assert sa.inspect(store.engine).has_table("connectif_sync_run_history")
    with StateStore(url) as store:  # opened again: nothing left to drop
        assert {i.name for i in REJECTED_BROWSE_INDEXES} <= {
            i["name"] for i in sa.inspect(store.engine).get_indexes("connectif_sync_rejected")
        }
