"""The expiry rule: a message with no final status once its gateway's validity period has passed is
marked expired, visibly (events, delivery CSV, webhooks, `sftpsms events`), once; a real receipt
that came first is kept. Against the real service, with a simulator that never reports in time."""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from actors.expiry import REJECTED_GRACE, Expiry
from actors.projector import Projector
from eventstore.domain import ContactBatch, DeliveryLog, DispatchLog, message_id
from eventstore.store import open_store
from sftpsms.config import Settings
from sftpsms.gateways import GatewayConfigError, parse_gateways
from tests.receiver import running_receiver
from tests.service import running_service

REPORTED = "eventstore.domain:DeliveryLog.DeliveryReported"


def reported(data: Path) -> list[DeliveryLog.DeliveryReported]:
    store = open_store(data)
    try:
        return [store.mapper.to_domain_event(n) for n in store.notifications(0, 100_000, topics=[REPORTED])]  # type: ignore[misc]
    finally:
        store.close()


def test_messages_without_a_receipt_within_the_validity_period_are_marked_expired(tmp_path: Path) -> None:
    contacts = 5
    data = tmp_path / "data"
    data.mkdir()
    # Receipts an hour after submission; a validity period of one second.
    (data / "gateways.toml").write_text("[gateways.simulator]\ndelay = 3600\nvalidity = 1\n")
    body = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": f"2783{i:07d}"} for i in range(contacts)]}
    with running_receiver() as receiver, running_service(data, env={"SFTPSMS_EXPIRY_INTERVAL": "0.2"}) as service:
        service.add_account("acme", credits=contacts)
        assert service.cli("webhook", "add", "acme", receiver.url).returncode == 0
        with service.paramiko("acme") as sftp:
            with sftp.open("Send_SMS/send.json", "wb") as remote:
                remote.write(json.dumps(body).encode())
        folder, report = service.wait_report("acme", "send.json")
        assert folder == "Processed"
        posts = receiver.wait(contacts, timeout=30)
        csv_path = service.folder("acme", "Processed") / "send.json.delivery.csv"
        deadline = time.monotonic() + 30
        while True:
            rows = list(csv.DictReader(csv_path.open())) if csv_path.exists() else []
            if rows and all(row["status"] == "expired" for row in rows):
                break
            assert time.monotonic() < deadline, f"{rows}\n{service.log()[-3000:]}"
            time.sleep(0.1)
        time.sleep(1.0)  # further rounds: nothing is reported twice
        history = service.cli("events", "--file", "send.json", "--account", "acme")
    assert len(rows) == contacts
    events = reported(data)
    assert Counter(e.message_id for e in events) == Counter(
        {str(message_id(UUID(report["file_id"]), i)): 1 for i in range(contacts)}
    )
    assert {(e.status, e.gateway) for e in events} == {("expired", "simulator")}
    assert all("validity period" in (e.error or "") for e in events)
    assert sorted(post.json()["data"]["status"] for post in posts) == ["expired"] * contacts
    assert re.search(r"DeliveryReported\.expired\s+x5\b", history.stdout), history.stdout


def test_a_real_receipt_before_the_deadline_is_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "gateways.toml").write_text("[gateways.simulator]\ndelay = 0.2\nvalidity = 2\nfailed_per_mille = 0\nexpired_per_mille = 0\n")
    body = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": f"2783{i:07d}"} for i in range(3)]}
    with running_service(data, env={"SFTPSMS_EXPIRY_INTERVAL": "0.2"}) as service:
        service.add_account("acme", credits=3)
        with service.paramiko("acme") as sftp:
            with sftp.open("Send_SMS/send.json", "wb") as remote:
                remote.write(json.dumps(body).encode())
        service.wait_report("acme", "send.json")
        deadline = time.monotonic() + 30
        while len(reported(data)) < 3:
            assert time.monotonic() < deadline, service.log()
            time.sleep(0.1)
        time.sleep(3.0)  # past every deadline: the rule must leave them alone
    assert sorted(e.status for e in reported(data)) == ["delivered"] * 3


def test_validity_is_a_positive_number_of_seconds() -> None:
    assert parse_gateways({}).gateways["simulator"].validity == 48 * 3600
    with pytest.raises(GatewayConfigError, match="validity"):
        parse_gateways({"gateways": {"simulator": {"validity": 0}}})


def test_a_refused_message_that_lost_its_failed_status_gets_it_after_the_grace(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        store.create_account(username="acme", password_hash="x", email=None, country="ZA", created_at=at)
        batch = ContactBatch.open(file=UUID(int=1), account="acme", number=0, sender_id="Acme", not_before=None,
                                  expires_at=None, timestamp=at)
        for index in range(3):
            batch.queue(index, f"278300000{index}", None, "x", 1)
        batch.seal()
        dispatch = DispatchLog.start(batch=batch.id, file=UUID(int=1), account="acme")
        dispatch.submitted(0, "simulator", ("rejected-x",), 1, at.isoformat(), msisdn="2783000000", customer_id=None)
        dispatch.submitted(1, "simulator", ("000000000001",), 1, at.isoformat(), msisdn="2783000001", customer_id=None)
        dispatch.submitted(2, "smsc", ("000000000002",), 1, at.isoformat(), msisdn="2783000002", customer_id=None)
        store.save(batch, dispatch)
        Projector(store, tmp_path / "readmodels.db").catch_up_sync()
        settings = Settings(data_dir=tmp_path)
        expiry = Expiry(settings=settings, store=store, validity={"simulator": 600.0, "smsc": 3600.0})
        assert expiry.due(at + timedelta(seconds=REJECTED_GRACE - 1)) == []
        [refused] = expiry.due(at + timedelta(seconds=REJECTED_GRACE))
        assert (refused.status, refused.gateway_id, refused.message_id) == ("failed", "rejected-x", message_id(UUID(int=1), 0))
        assert expiry.due(at + timedelta(seconds=599)) == [], "looked at again at the next deadline only"
        found = expiry.due(at + timedelta(seconds=600))
        assert [(r.status, r.gateway_id) for r in found] == [("failed", "rejected-x"), ("expired", "000000000001")]
        assert found[1].at == at + timedelta(seconds=600)
        later = expiry.due(at + timedelta(seconds=3600))
        assert [(r.status, r.gateway) for r in later][-1] == ("expired", "smsc")
    finally:
        store.close()
