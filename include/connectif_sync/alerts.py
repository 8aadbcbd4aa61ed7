"""Alerts that reach people, told only when something changes (Airflow-free: the decision and the words).

Each alert is a state per (source, kind): a DAG that fails raises ``failure`` for that DAG; the next run that
succeeds clears it. People are told when a state is raised and, with a recovery notice, when it clears;
a failure that repeats every day sends one mail, not one a day. The states live in the state store
(``connectif_sync_alerts``), so every worker, the DAG processor and the triggerer share them.

A guardrail hold is a question to a person, not a state: each hold asks (its approval request is new).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from connectif_sync.store import StateStore


class AlertKind(StrEnum):
    """What an alert is about (stable names: alert states and metric tags use them)."""

    FAILURE = "failure"  # a run failed
    LATE = "late"  # a run missed its deadline
    HOLD = "guardrail_hold"  # the guardrail held a run for approval
    REJECTED_UPLOAD = "guardrail_rejected"  # a held run was rejected or timed out: nothing sent
    REJECTED_SHARE = "rejected_share"  # more rows set aside than the threshold
    PURCHASES_KEPT = "purchases_kept"  # purchases kept for the next run
    IMPORT_ERRORS = "import_errors"  # imports that ended in error (or rows Connectif refused)
    COUPON_POOL_LOW = "coupon_pool_low"  # the ERP's coupon pool cannot refill a set to refill_to


#: Anomalies that do not hold a run, with their default thresholds (per cent of extracted rows, counts).
DEFAULT_ANOMALY_THRESHOLDS: dict[str, float] = {
    "rejected_share_pct": 5.0, "purchases_kept": 0, "import_errors": 0, "coupon_pool_short": 0,
}  # fmt: skip


@dataclass(frozen=True)
class Alert:
    """One message to people: what happened, where, and whether it is a new problem or a recovery."""

    source: str  # the DAG id
    kind: AlertKind
    transition: str  # raised | cleared | ask
    subject: str
    text: str
    run_id: str | None = None
    url: str | None = None

    @property
    def html(self) -> str:
        body = "<br>\n".join(html.escape(line) for line in self.text.splitlines())
        link = f'<p><a href="{html.escape(self.url)}">Open in Airflow</a></p>' if self.url else ""
        return f"<html><body><p>{body}</p>{link}</body></html>"

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": str(self.kind),
            "transition": self.transition,
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "run_id": self.run_id,
            "url": self.url,
        }


_TITLES = {
    AlertKind.FAILURE: ("failed", "runs succeed again"),
    AlertKind.LATE: ("is late", "runs finish on time again"),
    AlertKind.HOLD: ("held for approval by the guardrail", ""),
    AlertKind.REJECTED_UPLOAD: ("upload rejected: nothing was sent", "uploads pass the guardrail again"),
    AlertKind.REJECTED_SHARE: ("rejects too many rows", "rejected rows back under the threshold"),
    AlertKind.PURCHASES_KEPT: ("keeps purchases for the next run", "no purchase kept any more"),
    AlertKind.IMPORT_ERRORS: ("has imports that ended in error", "imports succeed again"),
    AlertKind.COUPON_POOL_LOW: ("cannot refill coupon sets: the ERP pool is short", "the pool refills every set"),
}


def compose(source: str, kind: AlertKind, transition: str, detail: str, run_id: str | None = None,
            url: str | None = None) -> Alert:  # fmt: skip
    """The words of an alert."""
    problem, recovery = _TITLES[kind]
    if transition == "cleared":
        subject = f"[Connectif sync] RECOVERED: {source}: {recovery}"
        text = f"{source}: {recovery}.\n{detail}".rstrip()
    else:
        subject = f"[Connectif sync] {source} {problem}"
        text = f"{source} {problem}.\n{detail}".rstrip()
    if run_id:
        text += f"\nRun: {run_id}"
    return Alert(source, kind, transition, subject, text, run_id, url)


def on_state(store: StateStore, source: str, kind: AlertKind, active: bool, detail: str, run_id: str | None = None,
             url: str | None = None) -> Alert | None:  # fmt: skip
    """The alert to send when (source, kind) is now ``active`` or not: None when its state did not change."""
    transition = store.alert_transition(source, str(kind), active, detail if active else None)
    if transition is None:
        return None
    return compose(source, kind, transition, detail, run_id, url)


def anomalies(summary: Mapping[str, Any], thresholds: Mapping[str, float] | None = None) -> dict[AlertKind, str | None]:
    """The anomalies of a run summary that do not hold the run: kind -> what is wrong (None: all clear).

    Kinds a summary says nothing about (e.g. purchases kept, in a contacts run) are left out, so they keep
    their state.
    """
    t = {**DEFAULT_ANOMALY_THRESHOLDS, **(thresholds or {})}
    out: dict[AlertKind, str | None] = {}
    if summary.get("dry_run"):
        return out
    extracted = int(summary.get("extracted") or summary.get("extracted_lines") or 0)
    rejected = int(summary.get("rejected") or 0) - int(summary.get("rejected_by_connectif") or 0)
    if extracted:
        share = round(100.0 * rejected / extracted, 2)
        out[AlertKind.REJECTED_SHARE] = (
            f"{rejected} of {extracted} extracted rows were set aside ({share}%, threshold "
            f"{t['rejected_share_pct']}%); see the rejected store (`connectif-sync rejected`)"
            if share > t["rejected_share_pct"]
            else None
        )
    if "kept" in summary:
        kept = int(summary.get("kept") or 0)
        out[AlertKind.PURCHASES_KEPT] = (
            f"{kept} purchases kept for the next run: {'; '.join(map(str, summary.get('notes') or []))[:1500]}"
            if kept > t["purchases_kept"]
            else None
        )
    if "imports" in summary and summary.get("imports") is not None and "rejected_by_connectif" in summary:
        errors = int(summary.get("import_errors") or 0)
        refused = int(summary.get("rejected_by_connectif") or 0)
        out[AlertKind.IMPORT_ERRORS] = (
            f"{errors} imports ended in error and Connectif refused {refused} rows (they go again next run)"
            if errors + refused > t["import_errors"]
            else None
        )
    if "pool_short" in summary:
        short = {str(k): int(v) for k, v in (summary.get("pool_short") or {}).items()}
        out[AlertKind.COUPON_POOL_LOW] = (
            f"the ERP coupon pool lacks {sum(short.values())} codes to refill "
            + ", ".join(f"{s} ({n} short)" for s, n in sorted(short.items()))
            + ": add codes to the pool before the sets run out"
            if sum(short.values()) > t["coupon_pool_short"]
            else None
        )
    return out
