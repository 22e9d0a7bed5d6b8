"""Status emails through a real SMTP server (aiosmtpd): delivered with the report attached,
retried with backoff while the server is down without holding up processing, given up at last."""

from __future__ import annotations

import email
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.service import Service, running_service

BODY = {"Version": 7, "Email": "boss@example.com", "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}]}


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_server(port: int) -> Iterator[Mailbox]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


def upload(service: Service, name: str) -> dict[str, Any]:
    with service.paramiko("acme") as sftp:
        with sftp.open(f"Send_SMS/{name}", "wb") as remote:
            remote.write(json.dumps(BODY).encode())
    return service.wait_report("acme", name)[1]


def file_events(service: Service, name: str) -> list[dict[str, Any]]:
    history = json.loads(service.cli("events", "--file", name, "--account", "acme", "--json").stdout)
    return list(history[0]["events"])


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_status_email_goes_through_smtp_with_the_report_attached(tmp_path: Path) -> None:
    port = free_port()
    with smtp_server(port) as mailbox, running_service(tmp_path / "data", "--smtp-host", "127.0.0.1", "--smtp-port", str(port)) as service:
        service.add_account("acme")
        upload(service, "mailed.json")
        wait_for(lambda: mailbox.messages)
        message = mailbox.messages[0]
        assert message["To"] == "boss@example.com"
        assert "mailed.json" in message["Subject"] and "processed" in message["Subject"]
        attachments = [part for part in message.walk() if part.get_filename() == "mailed.json.report.json"]
        assert json.loads(attachments[0].get_payload(decode=True))["messages_queued"] == 1
        wait_for(lambda: any(e["event"] == "NotificationSent" for e in file_events(service, "mailed.json")))
        sent = [e for e in file_events(service, "mailed.json") if e["event"] == "NotificationSent"][0]
        assert (sent["via"], sent["attempts"]) == ("smtp", 1)
        assert not list((tmp_path / "data" / "outbox").glob("*.eml"))


def test_a_down_smtp_server_is_retried_and_does_not_hold_up_processing(tmp_path: Path) -> None:
    port = free_port()
    env = {"SFTPSMS_NOTIFY_BACKOFF": "0.3", "SFTPSMS_NOTIFY_ATTEMPTS": "10"}
    with running_service(tmp_path / "data", "--smtp-host", "127.0.0.1", "--smtp-port", str(port), env=env) as service:
        service.add_account("acme")
        started = time.monotonic()
        upload(service, "first.json")
        upload(service, "second.json")  # filed while the first email is still being retried
        assert time.monotonic() - started < 10
        time.sleep(1.0)
        with smtp_server(port) as mailbox:
            wait_for(lambda: len(mailbox.messages) == 2)
            wait_for(lambda: any(e["event"] == "NotificationSent" for e in file_events(service, "first.json")))
    sent = [e for e in file_events(service, "first.json") if e["event"] == "NotificationSent"][0]
    assert sent["attempts"] > 1


def test_an_email_that_cannot_be_delivered_is_given_up_and_recorded(tmp_path: Path) -> None:
    port = free_port()
    env = {"SFTPSMS_NOTIFY_BACKOFF": "0.1", "SFTPSMS_NOTIFY_ATTEMPTS": "3"}
    with running_service(tmp_path / "data", "--smtp-host", "127.0.0.1", "--smtp-port", str(port), env=env) as service:
        service.add_account("acme")
        upload(service, "lost.json")
        wait_for(lambda: any(e["event"] == "NotificationFailed" for e in file_events(service, "lost.json")))
        failed = [e for e in file_events(service, "lost.json") if e["event"] == "NotificationFailed"][0]
    assert failed["attempts"] == 3 and "Connection" in failed["error"]


def test_starttls_and_login_are_used_when_configured(tmp_path: Path) -> None:
    import ssl
    import subprocess

    from aiosmtpd.smtp import AuthResult

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    logins: list[str] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = auth_data.login == b"mailer" and auth_data.password == b"mail-pw"
        logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    port = free_port()
    mailbox = Mailbox()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        authenticator=authenticator, auth_require_tls=True,
    )
    controller.start()
    try:
        env = {"SFTPSMS_SMTP_PASSWORD": "mail-pw", "SSL_CERT_FILE": str(tmp_path / "cert.pem")}
        extra = ("--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--smtp-starttls", "--smtp-user", "mailer")
        with running_service(tmp_path / "data", *extra, env=env) as service:
            service.add_account("acme")
            upload(service, "tls.json")
            wait_for(lambda: mailbox.messages)
    finally:
        controller.stop()
    assert logins == ["mailer"] and "tls.json" in mailbox.messages[0]["Subject"]
