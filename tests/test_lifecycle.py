"""Lifecycle rules that need their own server settings: the sweep after a restart, stale cut-off
uploads, and messages expiring at End with their credits refunded."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import paramiko

from eventstore.domain import DispatchLog, batch_id, dispatch_log_id
from eventstore.store import open_store
from tests.service import running_service

BODY = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}]}


def test_a_file_left_in_send_sms_while_stopped_is_picked_up_by_the_sweep(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_service(data) as service:
        service.add_account("acme")
        with service.paramiko("acme"):
            pass  # creates the folders
    (data / "accounts/acme/Send_SMS/offline.json").write_text(json.dumps(BODY))
    with running_service(data) as service:
        folder, report = service.wait_report("acme", "offline.json")
    assert folder == "Processed" and report["messages_queued"] == 1


def test_a_processed_file_logs_the_seconds_of_each_phase(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_service(data) as service:
        service.add_account("acme")
        with service.paramiko("acme") as sftp, sftp.open("Send_SMS/timed.json", "w") as remote:
            remote.write(json.dumps(BODY))
        folder, _ = service.wait_report("acme", "timed.json")
        log = service.log()
    assert folder == "Processed"
    assert re.search(
        r"file=timed\.json account=acme contacts=1 phases: prepare=[\d.]+ pass1=[\d.]+ accept=[\d.]+ "
        r"pass2=[\d.]+ complete=[\d.]+",
        log,
    ), log[-3000:]


def test_a_cut_off_upload_left_too_long_is_filed_as_corrupt(tmp_path: Path) -> None:
    with running_service(tmp_path / "data", env={"SFTPSMS_INCOMPLETE_UPLOAD_TIMEOUT": "1"}) as service:
        service.add_account("acme")
        transport = paramiko.Transport(("127.0.0.1", service.port))
        transport.connect(username="acme", password="secret-pw")
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        remote = sftp.open("Send_SMS/cut.json", "wb")
        remote.write(b'{"Version": 7, "Contacts": [')
        remote.flush()
        transport.sock.close()
        folder, report = service.wait_report("acme", "cut.json")
    assert (folder, report["error_code"], report["detail"]) == ("Errors", "File.Corrupt", "upload incomplete")


def test_messages_unsent_at_end_expire_and_their_credits_come_back(tmp_path: Path) -> None:
    contacts = 12
    with running_service(tmp_path / "data", "--send-rate", "2") as service:
        service.add_account("acme", credits=100)
        end = (datetime.now(UTC) + timedelta(seconds=3)).strftime("%Y-%m-%d %H:%M:%S")
        body = {
            "Version": 7,
            "End": end,
            "Message_Template": "x",
            "Contacts": [{"msisdn": f"278312340{i:02d}"} for i in range(contacts)],
        }
        with service.paramiko("acme") as sftp:
            with sftp.open("Send_SMS/expiring.json", "wb") as remote:
                remote.write(json.dumps(body).encode())
        _, report = service.wait_report("acme", "expiring.json")
        assert report["credits_used"] == contacts
        log_id = dispatch_log_id(batch_id(UUID(report["file_id"]), 0))
        deadline = time.monotonic() + 30
        while True:
            store = open_store(service.data_dir)
            try:
                events = list(store.events.get(log_id))
                balance = store.account("acme").balance
            finally:
                store.close()
            if any(isinstance(e, DispatchLog.BatchDispatched) for e in events):
                break
            assert time.monotonic() < deadline, service.log()
            time.sleep(0.1)
    submitted = [e for e in events if isinstance(e, DispatchLog.MessageSubmitted)]
    expired = [e for e in events if isinstance(e, DispatchLog.MessageExpired)]
    assert submitted and expired, "the rate must leave some messages unsent at End"
    assert len(submitted) + len(expired) == contacts
    assert {e.index for e in submitted}.isdisjoint({e.index for e in expired})
    assert balance == 100 - contacts + len(expired)
