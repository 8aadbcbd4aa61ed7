"""The guardrail on real runs of a small sample ERP: each rule fires on its abnormal plan, and only then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

import sample_erp as erp
from connectif_sync import MAPPINGS_DIR, StateStore, run_sync
from connectif_sync.guardrail import Rule, Thresholds, Verdict, evaluate, evaluate_count, thresholds_for
from connectif_sync.mappings import MappingError, load_mapping
from tests.fixtures.store import as_earlier_version


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("erp") / "erp.db"
    url = f"sqlite:///{path}"
    erp.generate(url, contacts=400, products=50, orders=10, coupons=20, seed=11, dirty_rate=0.0)
    return url


def _copy(sample: str, tmp_path: Path) -> str:
    src = Path(sa.make_url(sample).database or "")
    dst = tmp_path / "erp.db"
    dst.write_bytes(src.read_bytes())
    return f"sqlite:///{dst}"


def _exec(url: str, sql: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


def _run(url: str, state: str, out: Path, confirm: bool = True, **kwargs):  # type: ignore[no-untyped-def]
    result = run_sync("contacts", url, out, state_url=state, **kwargs)
    if confirm:
        with StateStore(state) as store:
            for f in result.files:
                store.confirm_file(f.path)
    return result


def _verdict(result, state: str, thresholds: Thresholds | None = None) -> Verdict:  # type: ignore[no-untyped-def]
    with StateStore(state) as store:
        return evaluate(
            "contacts",
            result.report.as_dict(),
            store=store,
            thresholds=thresholds or Thresholds(),
            changes=result.changes,
            deleted_keys=result.deleted_keys,
        )


def _fired(v: Verdict) -> set[str]:
    return {str(f.rule) for f in v.fired}


@pytest.fixture
def confirmed(sample: str, tmp_path: Path) -> tuple[str, str]:
    """A copy of the ERP whose contacts Connectif confirmed in full, after three runs of history."""
    url = _copy(sample, tmp_path)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    _run(url, state, tmp_path / "r0")
    for i in (1, 2):
        _exec(url, f"UPDATE customers SET loyalty_points = loyalty_points + 1 WHERE id % 50 = {i}")
        _run(url, state, tmp_path / f"r{i}")
    return url, state


def test_a_normal_run_passes_and_reads_no_masks(confirmed: tuple[str, str], tmp_path: Path) -> None:
    url, state = confirmed
    _exec(url, "UPDATE customers SET loyalty_points = loyalty_points + 5 WHERE id % 40 = 3")
    result = _run(url, state, tmp_path / "n", confirm=False)
    v = _verdict(result, state)
    assert not v.hold, v.summary()
    assert {f.rule for f in v.findings} >= {Rule.CHANGED_SHARE, Rule.DISAPPEARED_KEYS, Rule.VOLUME_DROP,
                                           Rule.REJECTED_JUMP}  # fmt: skip
    assert v.counts["changed"] == result.report.changed > 0


def test_blanking_first_name_fires_emptied_and_changed(confirmed: tuple[str, str], tmp_path: Path) -> None:
    url, state = confirmed
    _exec(url, "UPDATE customers SET first_name = NULL")
    result = _run(url, state, tmp_path / "b", confirm=False)
    v = _verdict(result, state)
    assert v.hold
    assert _fired(v) == {"changed_share", "emptied_field"}
    emptied = next(f for f in v.fired if f.rule == Rule.EMPTIED_FIELD)
    with StateStore(state) as store:
        had_name = sum(1 for _ in store.confirmed("contacts"))
    assert "_name" in emptied.message and emptied.value > 50
    assert emptied.sample and all(s["field"] == "_name" and s["after"] == "(empty)" for s in emptied.sample)
    body = v.markdown()
    assert "emptied_field" in body and emptied.sample[0]["key"] in body and had_name > 0
    # a dry run reports the same rules without writing anything
    plan = run_sync("contacts", url, None, state_url=state, dry_run=True)
    assert _fired(_verdict(plan, state)) == {"changed_share", "emptied_field"}


def test_a_field_empty_before_and_after_is_not_emptied(confirmed: tuple[str, str], tmp_path: Path) -> None:
    """The masks hold the before side: rows whose birthdate was already empty do not count."""
    url, state = confirmed
    _exec(url, "UPDATE customers SET birthdate = NULL WHERE id % 2 = 0")
    _run(url, state, tmp_path / "half")  # approved: confirmed with birthdate empty on half the rows
    _exec(url, "UPDATE customers SET birthdate = NULL, loyalty_points = loyalty_points + 1 WHERE id % 2 = 0")
    result = _run(url, state, tmp_path / "again", confirm=False)
    v = _verdict(result, state, Thresholds(changed_pct=100))
    emptied = next(f for f in v.findings if f.rule == Rule.EMPTIED_FIELD)
    assert not emptied.fired and emptied.value == 0, emptied.message


def test_disappeared_keys_and_volume_drop(confirmed: tuple[str, str], tmp_path: Path) -> None:
    url, state = confirmed
    _exec(url, "DELETE FROM customers WHERE id % 2 = 0")
    result = _run(url, state, tmp_path / "d", confirm=False)
    v = _verdict(result, state)
    assert {"disappeared_keys", "volume_drop"} <= _fired(v)
    gone = next(f for f in v.fired if f.rule == Rule.DISAPPEARED_KEYS)
    assert gone.sample and gone.sample[0]["after"] == "gone"


def test_rejected_share_jump(confirmed: tuple[str, str], tmp_path: Path) -> None:
    url, state = confirmed
    _exec(url, "UPDATE customers SET email = 'not-an-email-' || id WHERE id % 5 = 0")
    result = _run(url, state, tmp_path / "r", confirm=False)
    v = _verdict(result, state, Thresholds(disappeared_pct=100))
    assert "rejected_jump" in _fired(v)
    assert v.counts["rejected_share_pct"] >= 19


def test_first_run_and_short_history_do_not_hold(sample: str, tmp_path: Path) -> None:
    url = _copy(sample, tmp_path)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    result = _run(url, state, tmp_path / "first", confirm=False)
    v = _verdict(result, state)
    assert not v.hold and v.findings == []


def test_thresholds_from_mapping_and_variable(tmp_path: Path) -> None:
    t = thresholds_for(
        "contacts", {"changed_pct": 40}, json.dumps({"*": {"emptied_pct": 1}, "contacts": {"min_history": 5}})
    )
    assert (t.changed_pct, t.emptied_pct, t.min_history) == (40, 1, 5)
    assert thresholds_for("erasure").max_rows == 100
    with pytest.raises(ValueError, match="unknown guardrail setting 'changed'"):
        thresholds_for("contacts", {"changed": 3})
    with pytest.raises(ValueError, match="not valid JSON"):
        thresholds_for("contacts", None, "{nope")
    raw = yaml.safe_load((MAPPINGS_DIR / "contacts.yaml").read_text())
    raw["guardrail"] = {"changed_pct": 60, "enabled": True}
    good = tmp_path / "contacts.yaml"
    good.write_text(yaml.safe_dump(raw))
    assert load_mapping(good).guardrail == {"changed_pct": 60, "enabled": True}
    raw["guardrail"] = {"changed_pct": "lots"}
    good.write_text(yaml.safe_dump(raw))
    with pytest.raises(MappingError, match="changed_pct must be a percentage"):
        load_mapping(good)


def test_disabled_guardrail_reports_but_never_holds(confirmed: tuple[str, str], tmp_path: Path) -> None:
    url, state = confirmed
    _exec(url, "UPDATE customers SET first_name = ''")
    result = _run(url, state, tmp_path / "x", confirm=False)
    v = _verdict(result, state, Thresholds(enabled=False))
    assert not v.hold and _fired(v) == {"changed_share", "emptied_field"}


def test_count_rule_and_round_trip() -> None:
    v = evaluate_count("erasure", 150, thresholds_for("erasure"), ["a@x.com", "b@x.com"])
    assert v.hold and _fired(v) == {"count"}
    assert Verdict.from_dict(json.loads(json.dumps(v.as_dict()))).as_dict() == v.as_dict()
    assert not evaluate_count("erasure", 100, thresholds_for("erasure")).hold


def test_a_store_from_before_masks_gets_the_column_and_counts_old_rows_as_filled(
    confirmed: tuple[str, str], tmp_path: Path
) -> None:
    url, state = confirmed
    as_earlier_version(state, "contacts")  # the confirmed rows where the previous version kept them
    _exec(state, "ALTER TABLE connectif_sync_state DROP COLUMN empty_mask")  # a store of the previous version
    with StateStore(state) as store:  # opening it for writing adds the column back, empty
        masks = store.empty_masks("contacts", [next(iter(store.load_index("contacts").key_hashes.tolist()))])
        assert list(masks.values()) == [None]
    _exec(url, "UPDATE customers SET birthdate = NULL, loyalty_points = loyalty_points + 1 WHERE id % 2 = 0")
    result = _run(url, state, tmp_path / "old", confirm=False)
    v = _verdict(result, state, Thresholds(changed_pct=100))
    emptied = next(f for f in v.findings if f.rule == Rule.EMPTIED_FIELD)
    assert emptied.fired and "_birthdate" in emptied.message  # unknown before-values: the safe side


class _Runs:
    """A state store that only knows the last runs' reports (what the history rules read)."""

    def __init__(self, reports: list[dict[str, object]]) -> None:
        self.reports = reports

    def runs(self, obj: str, limit: int) -> list[dict[str, object]]:
        return [
            {"run_id": f"r{n}", "mode": "full", "finished_at": "x", "report": r} for n, r in enumerate(self.reports)
        ]


def test_coupons_refill_holds_on_count_or_a_jump_of_refused_codes() -> None:
    from connectif_sync.guardrail import evaluate_refill, thresholds_for

    t = thresholds_for("coupons")
    calm = [{"extracted": 400, "invalid": 4, "duplicate": 0}] * 3
    ok = evaluate_refill({"mode": "full", "extracted": 800, "invalid": 8}, {"s1": 400, "s2": 392},
                         store=_Runs(calm), thresholds=t)  # type: ignore[arg-type]  # fmt: skip
    assert not ok.hold and [f.rule for f in ok.findings] == ["count", "rejected_jump"]
    big = evaluate_refill({"mode": "full", "extracted": 9000}, {"s1": 9000}, store=_Runs(calm),
                          thresholds=t)  # type: ignore[arg-type]  # fmt: skip
    assert big.hold and big.fired[0].rule == "count" and big.fired[0].sample == [
        {"key": "s1", "field": "codes", "before": "", "after": 9000}
    ]
    broken = evaluate_refill({"mode": "full", "extracted": 400, "invalid": 200}, {"s1": 200}, store=_Runs(calm),
                             thresholds=t)  # type: ignore[arg-type]  # fmt: skip
    assert broken.hold and [f.rule for f in broken.fired] == ["rejected_jump"]
    first = evaluate_refill({"mode": "full", "extracted": 400, "invalid": 200}, {"s1": 200}, store=_Runs([]),
                            thresholds=t)  # type: ignore[arg-type]  # fmt: skip
    assert not first.hold  # no history yet: only the count rule applies
