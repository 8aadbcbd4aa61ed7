"""Erasure requests: pending ones oldest first, done_at recorded once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectif_sync.erasure import ErasureTable, mark_erasures_done, pending_erasures


@pytest.fixture
def erp(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'erp.sqlite'}")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE erasure_requests (id INTEGER PRIMARY KEY, email VARCHAR(400) NOT NULL, "
                "requested_at DATETIME NOT NULL, done_at DATETIME, note VARCHAR(200))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO erasure_requests VALUES "
                "(1, ' Ana@Example.COM ', '2026-01-03 10:00:00', NULL, 'x'),"
                "(2, 'luis@example.com', '2026-01-01 09:00:00', NULL, 'x'),"
                "(3, 'done@example.com', '2026-01-01 08:00:00', '2026-01-02 00:00:00', 'x')"
            )
        )
    yield engine
    engine.dispose()


def test_pending_requests_oldest_first_with_email_as_typed(erp: sa.Engine) -> None:
    pending = pending_erasures(erp)
    assert [(r.id, r.email) for r in pending] == [(2, "luis@example.com"), (1, " Ana@Example.COM ")]
    assert pending[0].requested_at == datetime(2026, 1, 1, 9, 0)
    assert [r.id for r in pending_erasures(erp, limit=1)] == [2]


def test_mark_done_records_the_first_date_only(erp: sa.Engine) -> None:
    assert mark_erasures_done(erp, [1, 3], when=datetime(2026, 1, 5, 12, tzinfo=UTC)) == 1
    assert mark_erasures_done(erp, [1], when=datetime(2026, 2, 1, tzinfo=UTC)) == 0
    assert mark_erasures_done(erp, []) == 0
    assert [r.id for r in pending_erasures(erp)] == [2]
    with erp.connect() as conn:
        done = dict(conn.execute(sa.text("SELECT id, done_at FROM erasure_requests")).all())
    assert str(done[1]).startswith("2026-01-05 12:00:00")
    assert str(done[3]).startswith("2026-01-02 00:00:00")


def test_custom_table_description(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE gdpr (rid INTEGER, mail TEXT, asked TIMESTAMP, erased TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO gdpr VALUES (9, 'z@example.com', '2026-01-01 00:00:00', NULL)"))
    table = ErasureTable(
        table="gdpr", id_column="rid", email_column="mail", requested_at_column="asked", done_at_column="erased"
    )
    assert [r.email for r in pending_erasures(engine, table=table)] == ["z@example.com"]
    assert mark_erasures_done(engine, [9], table=table) == 1
    assert pending_erasures(engine, table=table) == []
    engine.dispose()
