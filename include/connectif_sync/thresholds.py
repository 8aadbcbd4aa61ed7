"""The guardrail's rules and thresholds: what may hold a run, and how each object's limits are set.

Apart from :mod:`connectif_sync.guardrail` (which evaluates a run's plan against the state store) so that the
mappings can check a ``guardrail:`` section without importing the pipeline's types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

SAMPLE = 10  # sample keys shown per rule


class Rule(StrEnum):
    """The guardrail's rules (stable names: they appear in alerts, XCom and metrics)."""

    CHANGED_SHARE = "changed_share"
    EMPTIED_FIELD = "emptied_field"
    DISAPPEARED_KEYS = "disappeared_keys"
    VOLUME_DROP = "volume_drop"
    REJECTED_JUMP = "rejected_jump"
    COUNT = "count"


@dataclass(frozen=True)
class Thresholds:
    """When the guardrail holds a run (percentages are of confirmed rows unless said otherwise)."""

    enabled: bool = True
    changed_pct: float = 25.0
    emptied_pct: float = 5.0
    disappeared_pct: float = 5.0
    volume_drop_pct: float = 30.0
    rejected_jump_pct: float = 5.0  # percentage points above the median rejected share
    min_confirmed: int = 50
    history_runs: int = 7
    min_history: int = 3
    max_rows: int | None = None  # rows (purchases, erasures) one run may send without approval

    def with_overrides(self, raw: AbcMapping[str, Any] | None, where: str) -> Thresholds:
        """These thresholds with the entries of ``raw`` applied; unknown or ill-typed entries are an error
        that names ``where`` and the entry."""
        if not raw:
            return self
        if not isinstance(raw, AbcMapping):
            raise ValueError(f"{where}: the guardrail settings must be a mapping of name: value, got {raw!r}")
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in known:
                raise ValueError(f"{where}: unknown guardrail setting {name!r}. Fix: use one of {', '.join(known)}")
            if name == "enabled":
                if not isinstance(value, bool):
                    raise ValueError(f"{where}: enabled must be true or false, got {value!r}")
            elif name == "max_rows":
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                    raise ValueError(f"{where}: max_rows must be a whole number >= 0 or null, got {value!r}")
            elif name in ("min_confirmed", "history_runs", "min_history"):
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{where}: {name} must be a whole number >= 0, got {value!r}")
            elif not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{where}: {name} must be a percentage >= 0, got {value!r}")
            changes[name] = value
        return replace(self, **changes)


DEFAULTS: dict[str, Thresholds] = {
    "contacts": Thresholds(),
    "products": Thresholds(),
    # An hour of purchases at the shared rate limit is about 5,400 requests.
    "purchases": Thresholds(max_rows=5_000),
    # A refill adds codes customers will receive: 10 sets refilled from 100 to 500 is 4,000 codes.
    "coupons": Thresholds(max_rows=5_000),
    # Deleting contacts cannot be undone: more than this many in one run needs a person.
    "erasure": Thresholds(max_rows=100),
}


def thresholds_for(
    obj: str, mapping_settings: AbcMapping[str, Any] | None = None, variable: str | AbcMapping[str, Any] | None = None
) -> Thresholds:
    """The thresholds of ``obj``: defaults, then the mapping's ``guardrail:`` section, then the Variable's
    ``"*"`` entry, then its ``obj`` entry (a JSON text or an already parsed mapping)."""
    out = DEFAULTS.get(obj, Thresholds()).with_overrides(mapping_settings, f"mapping of {obj}: guardrail")
    if variable in (None, ""):
        return out
    if isinstance(variable, str):
        try:
            variable = json.loads(variable)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"Variable connectif_guardrail is not valid JSON ({exc}). Fix: e.g. "
                '{"contacts": {"changed_pct": 50}, "*": {"emptied_pct": 10}}'
            ) from exc
    if not isinstance(variable, AbcMapping):
        raise ValueError("Variable connectif_guardrail must be a JSON object of object name -> settings")
    for name in ("*", obj):
        out = out.with_overrides(variable.get(name), f"Variable connectif_guardrail: {name}")
    return out
