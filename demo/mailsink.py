"""The demo's mail server: a local SMTP sink (aiosmtpd) that keeps every alert mail as a file.

Airflow's alert mails (``connectif_alert_email``, through the SMTP connection ``smtp_default``) reach
``.demo/mail/``: one ``.eml`` file per mail (open it in any mail reader) and a line per mail in
``index.txt`` (time, recipients, subject). Nothing leaves the machine.
"""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Who the demo's alerts go to (any address: the sink keeps every mail).
DEMO_RECIPIENT = "data-team@example.com"


@dataclass
class MailSink:
    """An SMTP server on ``host:port`` writing what it receives into ``folder``."""

    folder: Path
    host: str = "127.0.0.1"
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _count: int = 0
    _controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        now = datetime.now(UTC)
        with self._lock:
            self._count += 1
            path = self.folder / f"{now:%Y%m%dT%H%M%S}-{self._count:04d}.eml"
            path.write_bytes(envelope.content)
            with (self.folder / "index.txt").open("a", encoding="utf-8") as index:
                index.write(f"{now:%Y-%m-%d %H:%M:%S}Z  to {', '.join(envelope.rcpt_tos)}  "
                            f"{msg.get('Subject', '')}  ({path.name})\n")  # fmt: skip
        return "250 Message accepted for delivery"

    def start(self) -> MailSink:
        from aiosmtpd.controller import Controller

        self.folder.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def connection(self) -> dict[str, Any]:
        """The Airflow SMTP connection that reaches the sink (no TLS, no login)."""
        return {
            "conn_type": "smtp",
            "host": self.host,
            "port": self.port,
            "extra": '{"disable_ssl": true, "disable_tls": true, "timeout": 10, "retry_limit": 1}',
        }

    def mails(self) -> list[str]:
        """The index lines of the mails received so far."""
        index = self.folder / "index.txt"
        return index.read_text(encoding="utf-8").splitlines() if index.exists() else []
