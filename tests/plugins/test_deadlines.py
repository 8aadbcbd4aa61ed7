"""The late-run Deadline Alert's reference: the deadline comes from a Variable the scheduler reads when it
creates a run (inside its own session), or from the DAG's default."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectif_provider import alerts


class _Session:
    """The scheduler's session, as the deadline reference uses it: the run's ``queued_at``, and the Variable
    row of the metadata database (none here: the environment or the default decide)."""

    def __init__(self, queued_at: datetime | None) -> None:
        self.queued_at = queued_at

    def scalar(self, query: Any) -> Any:
        return self.queued_at if "queued_at" in str(query) else None


def test_deadline_variable_tunes_the_deadline_without_a_deploy(dagbag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DAG file reads no Variable; the scheduler, creating a run, reads the Variable or takes the default."""
    from airflow.sdk import Variable
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.encoders import encode_deadline_alert
    from connectif_dags.alerting import dag_alerting

    from connectif_provider.deadlines import QueuedPlusVariable

    def no_parse_time_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a DAG file read a Variable while it was parsed")

    with monkeypatch.context() as m:
        m.setattr(Variable, "get", staticmethod(no_parse_time_read))
        alert = dag_alerting("connectif_contacts", late_after=timedelta(hours=2))["deadline"]
    assert alert.reference == QueuedPlusVariable("connectif_deadline_connectif_contacts_seconds", 7200)
    assert alert.interval == timedelta(0) and alert.callback.path == "connectif_provider.alerts.run_late"
    # what the scheduler does when it creates a run: decode the stored alert (the class is found through the
    # provider's plugin), then evaluate it against the run
    stored = decode_deadline_alert(encode_deadline_alert(alert))
    queued = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)

    def deadline() -> datetime:
        return stored.reference.evaluate_with(session=_Session(queued), interval=stored.interval,
                                              dag_id="connectif_contacts", run_id="scheduled__x")  # fmt: skip

    assert deadline() == queued + timedelta(hours=2)  # no Variable: the DAG's default, the run is created
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_DEADLINE_CONNECTIF_CONTACTS_SECONDS", "600")
    assert deadline() == queued + timedelta(seconds=600)
    assert alerts.late_after("connectif_contacts", timedelta(hours=2)) == timedelta(seconds=600)  # recovery check
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_DEADLINE_CONNECTIF_CONTACTS_SECONDS", "ten minutes")
    assert deadline() == queued + timedelta(hours=2)  # a typo never stops runs from being created
    assert stored.reference.evaluate_with(session=_Session(None), interval=stored.interval,
                                          dag_id="connectif_contacts", run_id="gone") is None  # fmt: skip


def test_the_scheduler_reads_the_deadline_variable_inside_its_own_session(dagbag: Any) -> None:
    """Variable.get would close Airflow's thread-local session, the scheduler's, in the middle of creating a run
    (every object it holds detached: the scheduler crashed). The reference reads through that session instead."""
    import sqlalchemy as sa
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    from connectif_provider.deadlines import scheduler_variable

    key, other = "connectif_deadline_connectif_products_seconds", "connectif_probe_held"
    with create_session() as session:
        session.execute(sa.delete(Variable).where(Variable.key.in_([key, other])))
        session.add_all([Variable(key=key, val="1200"), Variable(key=other, val="x")])
    with create_session() as session:
        held = session.scalars(sa.select(Variable).where(Variable.key == other)).one()  # what the scheduler holds
        assert scheduler_variable(key, session) == "1200"
        assert scheduler_variable("connectif_deadline_nobody_seconds", session) is None
        assert held in session and held.key == other  # still attached (Variable.get would have detached it)
        session.execute(sa.delete(Variable).where(Variable.key.in_([key, other])))
