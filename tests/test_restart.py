"""Crash safety: SIGKILL the server in the middle of a file, start it again, and every contact is
queued exactly once (the deterministic ids and the skipped stored batches at work)."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from eventstore.domain import ContactBatch, batch_id, message_id
from eventstore.store import open_store
from sftpsms.config import Settings
from tests.provider import running_provider
from tests.service import running_service

CONTACTS = 40_000


def big_file(path: Path) -> None:
    contacts = [{"msisdn": f"2783{i:07d}", "customerId": f"C{i}"} for i in range(CONTACTS)]
    path.write_text(json.dumps({"Version": 7, "Message_Template": "Hello", "Contacts": contacts}))


def queued_batches(data_dir: Path) -> int:
    store = open_store(data_dir)
    try:
        rows = store.notifications(0, 100_000, topics=["eventstore.domain:ContactBatch.BatchSealed"])
        return len(rows)
    finally:
        store.close()


def test_a_file_interrupted_by_sigkill_is_finished_after_restart_without_duplicates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    upload = tmp_path / "big.json"
    big_file(upload)
    with running_service(data, "--send-rate", "1") as service:
        service.add_account("acme", credits=CONTACTS)
        with service.paramiko("acme") as sftp:
            sftp.put(str(upload), "Send_SMS/big.json")
        deadline = time.monotonic() + 60
        while queued_batches(data) < 5:  # part-way through pass 2
            assert time.monotonic() < deadline, service.log()
            time.sleep(0.01)
        service.process.send_signal(signal.SIGKILL)
        service.process.wait()
    interrupted_at = queued_batches(data)
    assert 0 < interrupted_at < CONTACTS // 1000, "the kill must land mid-file"
    assert not (data / "accounts/acme/Processed/big.json.report.json").exists()

    with running_service(data, "--send-rate", "1") as service:
        folder, report = service.wait_report("acme", "big.json", timeout=120)
    assert folder == "Processed" and report["messages_queued"] == CONTACTS
    store = open_store(data)
    try:
        file_id = UUID(report["file_id"])
        indexes: Counter[int] = Counter()
        for number in range(CONTACTS // 1000):
            for event in store.events.get(batch_id(file_id, number)):
                if isinstance(event, ContactBatch.MessageQueued):
                    indexes[event.index] += 1
        assert store.account("acme").balance == 0  # credits reserved once
    finally:
        store.close()
    assert len(indexes) == CONTACTS and set(indexes.values()) == {1}


def submitted_count(data_dir: Path) -> int:
    store = open_store(data_dir)
    try:
        return len(store.notifications(0, 100_000, topics=["eventstore.domain:DispatchLog.MessageSubmitted"]))
    finally:
        store.close()


def test_a_dispatch_interrupted_by_sigkill_sends_every_message_once(tmp_path: Path) -> None:
    contacts = 300
    data = tmp_path / "data"
    body = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": f"2783{i:07d}"} for i in range(contacts)]}
    with running_service(data, "--send-rate", "100") as service:
        service.add_account("acme", credits=contacts)
        with service.paramiko("acme") as sftp:
            with sftp.open("Send_SMS/send.json", "wb") as remote:
                remote.write(json.dumps(body).encode())
        deadline = time.monotonic() + 60
        while submitted_count(data) < 50:
            assert time.monotonic() < deadline, service.log()
            time.sleep(0.01)
        service.process.send_signal(signal.SIGKILL)
        service.process.wait()
    assert submitted_count(data) < contacts, "the kill must land mid-dispatch"

    with running_service(data, "--send-rate", "100") as service:
        deadline = time.monotonic() + 60
        while submitted_count(data) < contacts:
            assert time.monotonic() < deadline, service.log()
            time.sleep(0.05)
        time.sleep(0.5)  # a few more dispatcher rounds: nothing more may be submitted
    assert submitted_count(data) == contacts
    journal = (Settings.from_env(data_dir=data).simulator_dir / "accepted.log").read_text().split("\n")
    accepted = Counter(line.split(" ")[0] for line in journal if line)
    assert len(accepted) == contacts and set(accepted.values()) == {1}, "the simulator got a message twice"


def delivery_counts(data_dir: Path) -> Counter[str]:
    """DeliveryReported events per message id."""
    store = open_store(data_dir)
    try:
        found: Counter[str] = Counter()
        for notification in store.notifications(0, 1_000_000, topics=["eventstore.domain:DeliveryLog.DeliveryReported"]):
            event = store.mapper.to_domain_event(notification)
            found[event.message_id] += 1  # type: ignore[attr-defined]
        return found
    finally:
        store.close()


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_receipts_a_stop_left_unreported_are_reported_once_after_restart(tmp_path: Path, stop: signal.Signals) -> None:
    contacts = 300
    data = tmp_path / "data"
    body = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": f"2783{i:07d}"} for i in range(contacts)]}
    # Receipts 2.5-7.5 s after submission: at the stop most submitted messages await theirs.
    slow = {"SFTPSMS_SIMULATOR_DELIVERY_DELAY": "5"}
    with running_service(data, "--send-rate", "200", env=slow) as service:
        service.add_account("acme", credits=contacts)
        with service.paramiko("acme") as sftp:
            with sftp.open("Send_SMS/send.json", "wb") as remote:
                remote.write(json.dumps(body).encode())
        deadline = time.monotonic() + 60
        while submitted_count(data) < 150:
            assert time.monotonic() < deadline, service.log()
            time.sleep(0.01)
        service.process.send_signal(stop)
        service.process.wait(timeout=30)
    before = delivery_counts(data)
    assert len(before) < submitted_count(data), "the stop must leave receipts unreported"

    with running_service(data, "--send-rate", "200", env={"SFTPSMS_SIMULATOR_DELIVERY_DELAY": "0.2"}) as service:
        deadline = time.monotonic() + 60
        while len(delivery_counts(data)) < contacts:
            assert time.monotonic() < deadline, f"{len(delivery_counts(data))} of {contacts} final\n{service.log()[-3000:]}"
            time.sleep(0.1)
        time.sleep(1.0)  # receipts still on their way would show up as a second report
    reported = delivery_counts(data)
    assert len(reported) == contacts and set(reported.values()) == {1}


def test_http_receipts_that_arrive_after_a_restart_still_match_their_messages(tmp_path: Path) -> None:
    """A real gateway's receipts come when they come: after a SIGKILL and a start, with nothing in
    memory, they are matched through the gateway_ids read model (and recorded once)."""
    numbers = [f"2783123450{i}" for i in range(6)]
    data = tmp_path / "data"
    data.mkdir()
    with running_provider() as provider:
        (data / "gateways.toml").write_text(
            f'[gateways.bulkhttp]\ntype = "http"\nurl = "{provider.url}"\ninbound_token = "in"\nbackoff = 0.05\n'
        )
        with running_service(data, "--http-port", "0") as service:
            service.add_account("acme")
            assert service.cli("route", "add", "2783", "--gateway", "bulkhttp").returncode == 0
            contacts = [{"msisdn": n} for n in numbers]
            with service.paramiko("acme") as sftp, sftp.open("Send_SMS/late.json", "wb") as remote:
                remote.write(json.dumps({"Version": 7, "Message_Template": "Hi", "Contacts": contacts}).encode())
            _, report = service.wait_report("acme", "late.json")
            deadline = time.monotonic() + 30
            while submitted_count(data) < len(numbers):
                assert time.monotonic() < deadline, service.log()[-3000:]
                time.sleep(0.05)
            service.process.send_signal(signal.SIGKILL)
            service.process.wait()
        file_id = UUID(report["file_id"])
        ids = [provider.ids[str(message_id(file_id, index))][0] for index in range(len(numbers))]
        with running_service(data, "--http-port", "0") as service:
            base = f"http://127.0.0.1:{service.http_port}/gateways/bulkhttp"
            with httpx.Client(headers={"authorization": "Bearer in"}) as client:
                for gateway_id in ids:  # one request each: each group is a command of the writer's
                    answer = client.post(f"{base}/receipts", json={"id": gateway_id, "status": "DELIVRD"})
                    assert (answer.status_code, answer.json()) == (200, {"recorded": 1, "ignored": 0}), service.log()[-3000:]
                assert client.post(f"{base}/receipts", json={"id": ids[0], "status": "UNDELIV"}).status_code == 200
            deadline = time.monotonic() + 30
            while len(delivery_counts(data)) < len(numbers):
                assert time.monotonic() < deadline, service.log()[-3000:]
                time.sleep(0.05)
    reported = delivery_counts(data)
    assert reported == Counter({str(message_id(file_id, i)): 1 for i in range(len(numbers))})
    assert "ProgrammingError" not in (data / "server.log").read_text()
