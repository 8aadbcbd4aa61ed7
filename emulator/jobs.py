"""What every background job (an import, an export) shares with the workers that run it.

A module of its own so that the workers (:mod:`emulator.workers`) import the jobs (:mod:`emulator.imports`,
:mod:`emulator.exports`) and the jobs import nothing back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.state import EmulatorState


class JobRun:
    """One job being processed: its account, and the store generation it started in (an admin reset bumps
    the generation, and every write of an older job is then refused: :class:`JobStopped`)."""

    def __init__(self, state: EmulatorState, job: dict[str, Any], account_id: str) -> None:
        self.state = state
        self.store = state.store
        self.job = job
        self.account_id = account_id
        self.generation = self.store.generation


class JobStopped(Exception):
    """The job was reset away (admin reset) or cancelled: stop without writing anything more."""
