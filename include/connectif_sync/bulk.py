"""The end of a bulk sync run (contacts, products): commit what Connectif confirmed, and sum the run up.

A run's ``extract`` step plans and writes the files; one import per file sends them. At the end, each import's
outcome is committed to the state store (:meth:`StateStore.confirm_import`: exactly the rows Connectif took;
rows of its error report stay pending and go again next run), and the run's :class:`RunSummary` says what
happened, including what did not: imports that did not finish, or finished without an answer that proves
which rows Connectif took. :class:`BulkRunEnd` carries both, so the caller can fail the run after publishing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectif_sync.contract import ImportOutcome, RunState, RunSummary, SyncObject
from connectif_sync.import_rejects import reason_label, record_import_rejects, with_keys
from connectif_sync.store import StateStore

#: Report counts copied as they are into the summary.
PLANNED_COUNTS = ("extracted", "new", "changed", "unchanged", "deleted", "invalid", "duplicate", "suppressed",
                  "files", "bytes")  # fmt: skip


@dataclass
class BulkRunEnd:
    """The summary of a bulk run, and what keeps it from being complete."""

    summary: RunSummary
    files: int = 0
    unfinished: int = 0  # imports that returned no outcome (their task failed)
    unconfirmed: list[str] = field(default_factory=list)  # why each unconfirmed import is not proven
    unconfirmed_rows: int = 0

    def failure(self, obj: str) -> str | None:
        """Why the run must fail (after its summary is published), or None."""
        if self.unfinished:
            return (
                f"{self.unfinished} of {self.files} {obj} imports did not finish (see the failed import_file "
                "tasks); confirmed rows are committed, the others will be sent again by the next run"
            )
        if self.unconfirmed:
            return (
                f"{len(self.unconfirmed)} {obj} imports finished without an answer that proves which rows "
                f"Connectif took ({self.unconfirmed[0]}); their {self.unconfirmed_rows} rows stay pending and go "
                "again next run"
            )
        return None


def planned_summary(
    dag_id: str, run_id: str, obj: SyncObject, report: Mapping[str, Any], *, dry_run: bool
) -> RunSummary:
    """The summary as the plan left it (the library's report of the ``extract`` step), before any import."""
    return RunSummary(
        dag_id=dag_id,
        run_id=run_id,
        object=obj,
        dry_run=dry_run,
        mode=report.get("mode"),
        library_run_id=report.get("run_id"),
        api_requests=report.get("api_requests"),
        plan=report.get("api_requests") if dry_run else None,
        rejected_by_reason=dict(report.get("rejected_by_reason") or {}),
        to_send=int(report.get("sent") or 0),
        **{k: int(report.get(k) or 0) for k in PLANNED_COUNTS},
    )


def confirm_imports(end: BulkRunEnd, results: Sequence[Mapping[str, Any]], store: StateStore) -> None:
    """Commit each finished import's confirmed rows and add its outcome (and Connectif's rejects) to the summary."""
    summary = end.summary
    for plain in results:
        result = with_keys(plain)  # the key of each line Connectif rejected, while the chunk files exist
        outcome = store.confirm_import(result)
        summary.sent += outcome["confirmed"]
        summary.rejected_by_connectif += outcome["failed"]
        summary.add_import(ImportOutcome.from_operator(result))
        if outcome.get("unconfirmed"):
            end.unconfirmed_rows += outcome["unconfirmed"]
            end.unconfirmed.append(outcome["reason"])
            continue
        record_import_rejects(store, end.summary.object.store_object, end.summary.library_run_id, result)
        for row in result.get("rejected_rows") or []:
            reason = reason_label(row.get("field"), row.get("error"))
            summary.rejected_by_reason[reason] = summary.rejected_by_reason.get(reason, 0) + 1
    spent = [r.get("api_requests") for r in results]
    if results and len(results) == end.files and all(isinstance(n, int) for n in spent):
        summary.api_requests = sum(int(n) for n in spent if n is not None)


def _notes(end: BulkRunEnd, deleted_keys: Sequence[str], verdict: Mapping[str, Any], decision: str | None) -> list[str]:
    summary = end.summary
    notes = [f"{reason}: {n}" for reason, n in sorted(summary.rejected_by_reason.items())]
    notes += [f"not confirmed, sent again next run: {why}" for why in end.unconfirmed]
    if summary.deleted:
        notes.append(
            f"{summary.deleted} keys confirmed earlier are gone from the source, e.g. {list(deleted_keys[:5])}"
        )
    if end.unfinished:
        notes.append(f"{end.unfinished} of {end.files} imports did not finish; their rows go again next run")
    if verdict.get("fired"):
        notes.append(f"guardrail {'would hold' if summary.dry_run else 'held'} the run: {', '.join(verdict['fired'])}")
    if decision is not None and decision != "approved":
        notes.append(f"upload {decision}: nothing was sent")
    return notes


def bulk_run_end(
    summary: RunSummary,
    *,
    report: Mapping[str, Any],
    deleted_keys: Sequence[str],
    files: int,
    results: Sequence[Mapping[str, Any]],
    verdict: Mapping[str, Any],
    decision: str | None,
    store: StateStore | None,
) -> BulkRunEnd:
    """Confirm the run's imports (``store`` None: a dry run, nothing to commit) and complete its summary.

    ``files``: how many imports were started (0 when the guardrail held the run back); ``results``: the
    outcomes of those that finished; ``verdict``: the guardrail's, ``decision``: a person's on a held run.
    """
    end = BulkRunEnd(summary=summary, files=files, unfinished=files - len(results))
    if store is not None:
        confirm_imports(end, results, store)
    summary.rejected = (
        summary.invalid + summary.duplicate + int(report.get("oversize") or 0) + summary.suppressed
        + summary.rejected_by_connectif
    )  # fmt: skip
    summary.notes = _notes(end, deleted_keys, verdict, decision)
    if end.unfinished or end.unconfirmed:
        summary.state = RunState.INCOMPLETE
    elif summary.dry_run:
        summary.state = RunState.PLANNED
    summary.extra.update(
        {
            "unconfirmed": end.unconfirmed_rows,
            "import_errors": end.unfinished,
            "guardrail": {
                "fired": verdict.get("fired", []),
                "held": bool(verdict.get("hold")),
                "would_hold": bool(verdict.get("would_hold")),
                "decision": decision,
            },
        }
    )
    return end
