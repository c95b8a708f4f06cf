"""Outgoing mail: SMTP when configured, otherwise (development and tests) a file per
message in ``DATA_DIR/mail`` plus a log line, so flows like password reset can be
completed locally."""
from __future__ import annotations

import logging
import re
import smtplib
import ssl
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from shared.errors import ServiceUnavailable
from services.auth.config import SmtpConfig

log = logging.getLogger(__name__)


class Mailer(Protocol):
    def send(self, to: str, subject: str, body: str) -> None: ...


def _message(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


class SmtpMailer:
    def __init__(self, smtp: SmtpConfig, sender: str, timeout: float = 10.0) -> None:
        self.smtp = smtp
        self.sender = sender
        self.timeout = timeout

    def send(self, to: str, subject: str, body: str) -> None:
        message = _message(self.sender, to, subject, body)
        try:
            with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=self.timeout) as server:
                if self.smtp.starttls:
                    server.starttls(context=ssl.create_default_context())
                if self.smtp.username:
                    server.login(self.smtp.username, self.smtp.password)
                server.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise ServiceUnavailable("Mail cannot be sent right now; try again shortly.",
                                     code="MAIL_UNAVAILABLE") from exc


class OutboxMailer:
    """Writes each message to ``<folder>/<UTC timestamp>-<recipient>.eml`` and logs it."""

    def __init__(self, folder: Path, sender: str) -> None:
        self.folder = folder
        self.sender = sender

    def send(self, to: str, subject: str, body: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.folder / f"{stamp}-{re.sub(r'[^A-Za-z0-9@._+-]', '_', to)}.eml"
        path.write_bytes(bytes(_message(self.sender, to, subject, body)))
        log.info("mail to %s written to %s (no SMTP_HOST configured):\n%s", to, path, body)
