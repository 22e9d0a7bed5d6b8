"""The status email sent for each filed upload: composed here, delivered by the notifier."""

from __future__ import annotations

import json
import smtplib
import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from sftpsms.report import OPTOUT


def compose_status_email(report: dict[str, Any], *, to: str, sender: str, now: datetime) -> EmailMessage:
    ok = report["status"] == "processed"
    outcome = "processed" if ok else f"failed: {report['error_code']}"
    message = EmailMessage()
    # A file name may hold any character but "/": none may break (or forge) a header.
    name = "".join(c if c.isprintable() else "?" for c in report["file"])
    message["Subject"] = f"[sftpsms] {name} {outcome}"
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain="sftpsms.local")
    lines = [
        f"File: {name}",
        f"Account: {report['account']}",
        f"Outcome: {outcome}",
        f"Detail: {report['detail']}",
        "",
        f"Contacts: {report['contacts']}",
        f"Messages queued: {report['messages_queued']}",
        f"Opt-outs skipped: {report['optouts_skipped']}",
        f"Contact errors: {sum(1 for error in report['contact_errors'] if error.get('code') != OPTOUT)}",
        f"Parts: {report['parts']}",
        f"Credits used: {report['credits_used']}",
        "",
        "The full report is attached, and is in your SFTP folder beside the file.",
    ]
    message.set_content("\n".join(lines) + "\n")
    message.add_attachment(
        json.dumps(report, indent=2, ensure_ascii=False).encode(),
        maintype="application",
        subtype="json",
        filename=f"{name}.report.json",
    )
    return message


def write_to_outbox(outbox: Path, name: str, message: EmailMessage) -> Path:
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{name}.eml"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(bytes(message))
    temporary.replace(path)
    return path


def send_smtp(
    message: EmailMessage,
    *,
    host: str,
    port: int,
    starttls: bool,
    user: str,
    password: str,
    timeout: float,
) -> None:
    """Deliver through an SMTP server (blocking: run it in a thread). Raises on any failure."""
    with smtplib.SMTP(host, port, timeout=timeout) as smtp:
        smtp.ehlo()
        if starttls:
            # Verified against the system's CAs (or SSL_CERT_FILE): smtplib's default would not.
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if user:
            smtp.login(user, password)
        smtp.send_message(message)
