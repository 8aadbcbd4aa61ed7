"""Which anomalies of a run summary deserve an alert (the library's half of the alerts)."""

from __future__ import annotations

from connectif_sync.alerts import AlertKind, anomalies


def test_anomalies_of_a_summary() -> None:
    summary = {"extracted": 100, "rejected": 9, "rejected_by_connectif": 2, "imports": 3, "import_errors": 1}
    found = anomalies(summary)
    assert found[AlertKind.REJECTED_SHARE] is not None and "7 of 100" in found[AlertKind.REJECTED_SHARE]
    assert found[AlertKind.IMPORT_ERRORS] is not None
    assert AlertKind.PURCHASES_KEPT not in found
    calm = anomalies({"extracted": 100, "rejected": 1, "kept": 0, "imports": 1, "rejected_by_connectif": 0})
    assert calm == {AlertKind.REJECTED_SHARE: None, AlertKind.PURCHASES_KEPT: None, AlertKind.IMPORT_ERRORS: None}
    assert anomalies({"dry_run": True, "extracted": 10, "rejected": 10}) == {}
    short = anomalies({"pool_short": {"set-b": 30, "set-a": 5}})[AlertKind.COUPON_POOL_LOW]
    assert short is not None and "lacks 35 codes" in short and "set-a (5 short), set-b (30 short)" in short
    assert anomalies({"pool_short": {}}) == {AlertKind.COUPON_POOL_LOW: None}
    assert anomalies({"pool_short": {"s": 3}}, {"coupon_pool_short": 10}) == {AlertKind.COUPON_POOL_LOW: None}
