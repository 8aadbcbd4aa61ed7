"""What every background job (an import, an export) shares with the workers that run it.

A module of its own so that the workers (:mod:`emulator.workers`) import the jobs (:mod:`emulator.imports`,
:mod:`emulator.exports`) and the jobs import nothing back.
"""

from __future__ import annotations


class JobStopped(Exception):
    """The job was reset away (admin reset) or cancelled: stop without writing anything more."""
