"""Run deadlines people tune without a deploy, read when Airflow creates a run, never when a DAG is parsed.

Airflow's own ``VariableInterval`` fails the creation of every run whose Variable does not exist, and reading
a Variable in the DAG file would hit the metadata database at every parse of every file. This reference is
evaluated by the scheduler once per run, when it creates the run (as ``VariableInterval`` is): the run's
``queued_at`` plus the Airflow Variable's seconds, or the DAG's default when the Variable is missing or not a
whole number of seconds (the scheduler logs which). The Variable is read from the secrets backends in
Airflow's order (custom backend, the environment ``AIRFLOW_VAR_...``, the metadata database through the
scheduler's own session: see :func:`scheduler_variable`).

Airflow finds the class through the provider's plugin (``deadline_references`` of ``ConnectifUIPlugin``):
install the distribution in the scheduler and the API server, as for the rest of the provider.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from airflow.sdk.definitions.deadline import REFERENCE_TYPE_FIELD, BaseDeadlineReference

log = logging.getLogger(__name__)


def deadline_variable(dag_id: str) -> str:
    """The Variable that sets a DAG's run deadline, in seconds after the run was queued."""
    return f"connectif_deadline_{dag_id}_seconds"


def seconds_from(raw: Any, default: timedelta, where: str) -> timedelta:
    """``raw`` (a Variable's value) as a deadline, ``default`` when it is missing or not whole seconds > 0."""
    if raw in (None, ""):
        return default
    try:
        seconds = int(str(raw).strip())
        if seconds <= 0:
            raise ValueError("not positive")
    except ValueError:
        log.warning("Variable %s=%r is not a whole number of seconds > 0: the default %s applies", where, raw, default)
        return default
    return timedelta(seconds=seconds)


@dataclass
class QueuedPlusVariable(BaseDeadlineReference):
    """When the run was queued, plus the Variable ``variable`` (seconds), else ``default_seconds``.

    Used with ``interval=timedelta(0)``: the whole span comes from here, so that a missing Variable falls
    back to the default instead of failing the run's creation.
    """

    variable: str = ""
    default_seconds: int = 0
    required_kwargs: ClassVar[set[str]] = {"dag_id", "run_id"}

    def serialize_reference(self) -> dict[str, Any]:
        return {REFERENCE_TYPE_FIELD: self.reference_name, "variable": self.variable,
                "default_seconds": self.default_seconds}  # fmt: skip

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> QueuedPlusVariable:
        return cls(variable=str(reference_data["variable"]), default_seconds=int(reference_data["default_seconds"]))

    def span(self, session: Any) -> timedelta:
        """The deadline after queueing, read now (in the scheduler, inside its transaction)."""
        try:
            raw = scheduler_variable(self.variable, session)
        except Exception:  # a secrets backend that fails must not stop runs from being created
            log.warning("Variable %s could not be read: the default deadline applies", self.variable, exc_info=True)
            raw = None
        return seconds_from(raw, timedelta(seconds=self.default_seconds), self.variable)

    def _evaluate_with(self, *, session: Any, **kwargs: Any) -> datetime | None:
        import sqlalchemy as sa
        from airflow.models import DagRun

        queued = session.scalar(
            sa.select(DagRun.queued_at).where(DagRun.dag_id == kwargs["dag_id"], DagRun.run_id == kwargs["run_id"])
        )
        return None if queued is None else queued + self.span(session)


def scheduler_variable(key: str, session: Any) -> str | None:
    """A Variable as the scheduler may read it while it creates a run: every secrets backend in Airflow's
    order, the metadata database through the scheduler's own ``session``.

    Not ``Variable.get``: its metadata-database lookup opens and closes Airflow's thread-local session, which is
    the scheduler's, and the run being created (and everything else it holds) would be detached from it.
    """
    import sqlalchemy as sa
    from airflow.configuration import ensure_secrets_loaded
    from airflow.models.variable import Variable
    from airflow.secrets.metastore import MetastoreBackend

    for backend in ensure_secrets_loaded():
        if isinstance(backend, MetastoreBackend):
            row = session.scalar(sa.select(Variable).where(Variable.key == key))
            value = row.val if row is not None else None
        else:
            value = backend.get_variable(key)
        if value is not None:
            return str(value)
    return None
