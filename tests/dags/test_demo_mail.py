"""The demo's SMTP sink: an alert sent the way the DAGs send it lands in ``.demo/mail/`` as a file."""

from __future__ import annotations

import email
import email.policy
import json
import time
from pathlib import Path

import pytest

from connectif_provider import alerts
from connectif_sync.alerts import AlertKind, compose
from demo.mailsink import DEMO_RECIPIENT, MailSink
from demo.standalone import free_port


def test_alert_mail_lands_in_the_demo_mail_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = MailSink(tmp_path / "mail", port=free_port("127.0.0.1")).start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(sink.connection()))
        monkeypatch.setenv("CONNECTIF_ALERT_EMAIL", DEMO_RECIPIENT)  # what the demo sets for Airflow
        alert = compose("connectif_contacts", AlertKind.HOLD, "ask", "emptied_field: 200 of 200 rows lose _name")
        assert alerts.send(alert) == 1
        deadline = time.monotonic() + 20
        while not sink.mails() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        sink.stop()
    [line] = sink.mails()
    assert DEMO_RECIPIENT in line and "held for approval by the guardrail" in line
    [eml] = list((tmp_path / "mail").glob("*.eml"))
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == alert.subject
    assert "200 of 200 rows lose _name" in str(msg.get_body(("html", "plain")).get_content())
