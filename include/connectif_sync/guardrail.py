"""The guardrail: is a run's plan abnormal enough that a person must approve it before anything is sent?

An upstream job that blanks ``first_name`` for every customer would make the next contacts run overwrite
every name in Connectif, faithfully. After ``extract``, :func:`evaluate` compares the plan with what
Connectif confirmed (the state store) and with the last runs (``connectif_sync_runs`` reports), rule by rule:

``changed_share``     more than ``changed_pct`` % of the confirmed rows would change;
``emptied_field``     a mapped field would go from filled to empty for more than ``emptied_pct`` % of them;
``disappeared_keys``  more than ``disappeared_pct`` % of the confirmed keys are gone from the source;
``volume_drop``       rows extracted fell by more than ``volume_drop_pct`` % against the median of the last
                      ``history_runs`` comparable runs (same kind of scan);
``rejected_jump``     the share of rows set aside rose more than ``rejected_jump_pct`` points above the median
                      share of those runs;
``count``             (purchases, erasure, or any object with ``max_rows``) more rows to send than ``max_rows``.

The share rules apply once at least ``min_confirmed`` rows are confirmed (a first run changes nothing that
Connectif had); the history rules once ``min_history`` comparable runs exist.

Before values: the state keeps a hash per row, not values, so the "filled -> empty" rule uses one more
integer per confirmed row: the mask of its empty fields (``connectif_sync_state.empty_mask``, written with
the row when Connectif confirms it). The new values are in the run's plan (:class:`~connectif_sync.pipeline.
ChangeSet`). Rows confirmed before masks existed count as filled (the safe side: at worst one extra hold).
The masks are only read when the plan's own count of changed rows with the field empty is over the
threshold, so a normal run reads nothing.

Thresholds: :data:`DEFAULTS`, overridden per object by the mapping's ``guardrail:`` section, overridden by a
JSON document (the Airflow Variable ``connectif_guardrail``: ``{"contacts": {"changed_pct": 50}, "*": {...}}``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping as AbcMapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from connectif_sync.thresholds import DEFAULTS, SAMPLE, Rule, Thresholds, thresholds_for

__all__ = [
    "DEFAULTS", "SAMPLE", "Finding", "Rule", "Thresholds", "Verdict", "evaluate", "evaluate_count", "evaluate_refill",
    "thresholds_for",
]  # fmt: skip

if TYPE_CHECKING:
    from connectif_sync.diff import ChangeSet
    from connectif_sync.store import StateStore


@dataclass
class Finding:
    """One rule, checked: the measured value against its threshold, and whether it fired."""

    rule: Rule
    fired: bool
    value: float
    threshold: float
    message: str
    sample: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rule"] = str(self.rule)
        return out


@dataclass
class Verdict:
    """What the guardrail concluded about one run's plan."""

    object: str
    hold: bool
    findings: list[Finding]
    counts: dict[str, Any]
    enabled: bool = True

    @property
    def fired(self) -> list[Finding]:
        return [f for f in self.findings if f.fired]

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "hold": self.hold,
            "enabled": self.enabled,
            "fired": [str(f.rule) for f in self.fired],
            "findings": [f.as_dict() for f in self.findings],
            "counts": dict(self.counts),
        }

    @classmethod
    def from_dict(cls, data: AbcMapping[str, Any]) -> Verdict:
        findings = [Finding(**{**f, "rule": Rule(f["rule"])}) for f in data.get("findings", [])]
        return cls(
            object=data["object"],
            hold=bool(data["hold"]),
            findings=findings,
            counts=dict(data.get("counts") or {}),
            enabled=bool(data.get("enabled", True)),
        )

    def summary(self) -> str:
        """One line per fired rule (for alerts and logs)."""
        if not self.fired:
            return f"{self.object}: no guardrail rule fired"
        return "\n".join(f"{self.object}: {f.rule}: {f.message}" for f in self.fired)

    def markdown(self) -> str:
        """The plan as the approval request shows it: rules, counts, sample keys with before and after."""
        lines = [f"### Guardrail held the `{self.object}` run: nothing was sent", ""]
        for f in self.fired:
            lines.append(f"- **{f.rule}**: {f.message}")
        lines += ["", "| count | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.counts.items()]
        for f in self.fired:
            if not f.sample:
                continue
            lines += ["", f"**Sample keys ({f.rule})**", "", "| key | field | before | after |", "|---|---|---|---|"]
            for s in f.sample:
                lines.append(
                    f"| {_cell(s.get('key'))} | {_cell(s.get('field', ''))} | {_cell(s.get('before', ''))} "
                    f"| {_cell(s.get('after', ''))} |"
                )
        others = [f for f in self.findings if not f.fired]
        if others:
            lines += ["", "Rules that did not fire: " + "; ".join(f"{f.rule} ({f.message})" for f in others)]
        lines += [
            "",
            "**Approve** sends the plan to Connectif as it is. **Reject** (or no answer before the timeout) sends "
            "nothing; the next run plans again from the source.",
        ]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")[:120]


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def comparable_history(store: StateStore, obj: str, mode: str, run_id: str | None, limit: int) -> list[dict[str, Any]]:
    """The reports of the last ``limit`` finished runs of ``obj`` comparable with a ``mode`` run (incremental
    runs with incremental ones, full scans with full scans and resyncs), newest first, without ``run_id``."""
    family = {"incremental"} if mode == "incremental" else {"full", "full_resync", "plan"}
    out = []
    for r in store.runs(obj, limit=limit * 3 + 5):
        rep = r.get("report")
        if r["run_id"] == run_id or r.get("finished_at") is None or not rep or r["mode"] == "plan":
            continue
        if r["mode"] in family:
            out.append(rep)
        if len(out) >= limit:
            break
    return out


def rejected_share(report: AbcMapping[str, Any]) -> float:
    """The percentage of extracted rows set aside by validation (suppressed rows are intentional: excluded)."""
    extracted = report.get("extracted") or 0
    rejected = sum(int(report.get(k) or 0) for k in ("invalid", "duplicate", "oversize"))
    return _pct(rejected, extracted)


def evaluate(
    obj: str,
    report: AbcMapping[str, Any],
    *,
    store: StateStore,
    thresholds: Thresholds,
    changes: ChangeSet | None = None,
    deleted_keys: list[str] | None = None,
    confirmed: int | None = None,
) -> Verdict:
    """Check a bulk run's plan (``report``: :class:`~connectif_sync.pipeline.SyncReport` as a dict)."""
    confirmed = store.count(obj) if confirmed is None else confirmed
    mode = str(report.get("mode") or "full")
    counts: dict[str, Any] = {
        "confirmed": confirmed,
        "extracted": report.get("extracted", 0),
        "new": report.get("new", 0),
        "changed": report.get("changed", 0),
        "unchanged": report.get("unchanged", 0),
        "disappeared": report.get("deleted", 0),
        "rejected": sum(int(report.get(k) or 0) for k in ("invalid", "duplicate", "oversize")),
        "to_send": report.get("sent", 0),
    }
    t = thresholds
    findings: list[Finding] = []
    if confirmed >= t.min_confirmed and confirmed > 0:
        findings += _share_findings(obj, report, store, t, confirmed, changes, deleted_keys, mode)
    history = comparable_history(store, obj, mode, report.get("run_id"), t.history_runs)
    if len(history) >= max(1, t.min_history):
        findings.append(_volume_drop(report, history, t, counts))
        findings.append(_rejected_jump(report, history, t, counts))
    if t.max_rows is not None:
        findings.append(count_finding(int(report.get("sent") or 0), t.max_rows, "rows"))
    return _verdict(obj, findings, counts, t)


def _share_findings(
    obj: str,
    report: AbcMapping[str, Any],
    store: StateStore,
    t: Thresholds,
    confirmed: int,
    changes: ChangeSet | None,
    deleted_keys: list[str] | None,
    mode: str,
) -> list[Finding]:
    """The rules measured against the confirmed rows: changed share, emptied fields, disappeared keys."""
    changed = int(report.get("changed") or 0)
    pct = _pct(changed, confirmed)
    sample = [
        {"key": s["key"], "field": "(row)", "before": "confirmed", "after": _short(s["after"])}
        for s in (changes.sample if changes is not None else [])[:SAMPLE]
    ]
    findings = [
        Finding(
            Rule.CHANGED_SHARE,
            pct > t.changed_pct,
            pct,
            t.changed_pct,
            f"{changed} of {confirmed} confirmed rows would change ({pct}%, threshold {t.changed_pct}%)",
            sample,
        )
    ]
    if changes is not None and len(changes):
        findings.append(_emptied(obj, changes, store, confirmed, t))
    if mode != "incremental":  # an incremental run does not see the whole source: no deletions to count
        gone = int(report.get("deleted") or 0)
        pct = _pct(gone, confirmed)
        findings.append(
            Finding(
                Rule.DISAPPEARED_KEYS,
                pct > t.disappeared_pct,
                pct,
                t.disappeared_pct,
                f"{gone} of {confirmed} confirmed keys are gone from the source ({pct}%, threshold "
                f"{t.disappeared_pct}%)",
                [
                    {"key": k, "field": "(row)", "before": "confirmed", "after": "gone"}
                    for k in (deleted_keys or [])[:SAMPLE]
                ],
            )
        )
    return findings


def _volume_drop(
    report: AbcMapping[str, Any], history: list[dict[str, Any]], t: Thresholds, counts: dict[str, Any]
) -> Finding:
    median = statistics.median(int(h.get("extracted") or 0) for h in history)
    extracted = int(report.get("extracted") or 0)
    drop = _pct(median - extracted, median) if median > 0 else 0.0
    counts["median_extracted"] = median
    return Finding(
        Rule.VOLUME_DROP,
        drop > t.volume_drop_pct,
        drop,
        t.volume_drop_pct,
        f"{extracted} rows extracted against a median of {median:g} over the last {len(history)} runs "
        f"({max(drop, 0.0)}% fewer, threshold {t.volume_drop_pct}%)",
    )


def _rejected_jump(report: AbcMapping[str, Any], history: list[dict[str, Any]], t: Thresholds,
                   counts: dict[str, Any]) -> Finding:  # fmt: skip
    share = rejected_share(report)
    base = statistics.median(rejected_share(h) for h in history)
    jump = round(share - base, 2)
    counts["rejected_share_pct"] = share
    counts["median_rejected_share_pct"] = base
    return Finding(
        Rule.REJECTED_JUMP,
        jump > t.rejected_jump_pct,
        jump,
        t.rejected_jump_pct,
        f"{share}% of extracted rows rejected against a median of {base}% "
        f"({jump:+} points, threshold +{t.rejected_jump_pct})",
    )


def evaluate_refill(
    report: AbcMapping[str, Any], to_send: AbcMapping[str, int], *, store: StateStore, thresholds: Thresholds
) -> Verdict:
    """The guardrail of a coupons refill (``to_send``: codes per coupon set). A refill never changes what
    Connectif holds, it adds codes that customers will receive, so the share rules do not apply: it holds when
    more codes than ``max_rows`` would go at once (e.g. a ``refill_to`` typed with a zero too many), or when
    the share of pool codes refused jumps (``rejected_jump``: a broken ERP job filling the pool)."""
    t = thresholds
    total = sum(to_send.values())
    rejected = sum(int(report.get(k) or 0) for k in ("invalid", "duplicate", "oversize"))
    counts: dict[str, Any] = {"sets": len(to_send), "to_send": total, "extracted": report.get("extracted", 0),
                              "rejected": rejected}  # fmt: skip
    findings = []
    if t.max_rows is not None:
        f = count_finding(total, t.max_rows, "coupon codes")
        f.sample = [{"key": s, "field": "codes", "before": "", "after": n} for s, n in list(to_send.items())[:SAMPLE]]
        findings.append(f)
    history = comparable_history(store, "coupons", str(report.get("mode") or "full"), report.get("run_id"),
                                 t.history_runs)  # fmt: skip
    if report.get("extracted") and len(history) >= max(1, t.min_history):
        findings.append(_rejected_jump(report, history, t, counts))
    return _verdict("coupons", findings, counts, t)


def evaluate_count(obj: str, to_send: int, thresholds: Thresholds, sample: list[str] | None = None) -> Verdict:
    """The guardrail of one-request-per-row work (purchases, erasures): hold above ``max_rows``."""
    findings = []
    if thresholds.max_rows is not None:
        f = count_finding(to_send, thresholds.max_rows, "purchases" if obj == "purchases" else "requests")
        f.sample = [{"key": k, "field": "", "before": "", "after": "to send"} for k in (sample or [])[:SAMPLE]]
        findings.append(f)
    return _verdict(obj, findings, {"to_send": to_send}, thresholds)


def count_finding(n: int, limit: int, what: str) -> Finding:
    return Finding(Rule.COUNT, n > limit, float(n), float(limit), f"{n} {what} to send (threshold {limit})")


def _verdict(obj: str, findings: list[Finding], counts: dict[str, Any], t: Thresholds) -> Verdict:
    return Verdict(obj, t.enabled and any(f.fired for f in findings), findings, counts, enabled=t.enabled)


def _short(values: AbcMapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if v not in (None, ""))[:120]


def _emptied(obj: str, changes: ChangeSet, store: StateStore, confirmed: int, t: Thresholds) -> Finding:
    """The field that most confirmed rows would lose (filled before, empty after)."""
    columns = changes.columns[: len(changes.columns)]
    limit = t.emptied_pct * confirmed / 100.0
    new_masks = changes.empty_masks
    # Upper bound first: changed rows whose new value is empty, per field, from the plan alone.
    bits = [(new_masks >> np.int64(i)) & 1 for i in range(min(len(columns), 63))]
    upper = [int(b.sum()) for b in bits]
    suspects = [i for i, n in enumerate(upper) if n > limit]
    worst_i, worst_n = (max(range(len(upper)), key=lambda i: upper[i]), max(upper)) if upper else (0, 0)
    emptied: dict[int, np.ndarray] = {}
    if suspects:
        rows = np.flatnonzero(np.bitwise_or.reduce([bits[i].astype(bool) for i in suspects]))
        before = store.empty_masks(obj, changes.key_hashes[rows].tolist())
        # unknown (confirmed before masks were kept) counts as filled: the safe side
        old = np.array([before.get(h) or 0 for h in changes.key_hashes[rows].tolist()], dtype=np.int64)
        for i in suspects:
            was_filled = ((old >> np.int64(i)) & 1) == 0
            now_empty = ((new_masks[rows] >> np.int64(i)) & 1) == 1
            emptied[i] = rows[was_filled & now_empty]
        worst_i = max(emptied, key=lambda i: len(emptied[i]))
        worst_n = len(emptied[worst_i])
    else:
        worst_n = 0  # no field is over the threshold even counting every changed row
    pct = _pct(worst_n, confirmed)
    name = columns[worst_i] if columns else ""
    sample: list[dict[str, Any]] = []
    if worst_n:
        hashes = {int(h) for h in changes.key_hashes[emptied[worst_i]].tolist()}
        for s in changes.sample:
            if int(s["key_hash"]) in hashes and len(sample) < SAMPLE:
                sample.append({"key": s["key"], "field": name, "before": "(filled)", "after": "(empty)"})
    return Finding(
        Rule.EMPTIED_FIELD,
        pct > t.emptied_pct,
        pct,
        t.emptied_pct,
        f"{worst_n} of {confirmed} confirmed rows would lose {name or 'a field'} (filled -> empty, {pct}%, "
        f"threshold {t.emptied_pct}%)"
        if worst_n
        else f"no field would be emptied in more than {t.emptied_pct}% of the confirmed rows",
        sample,
    )
