"""End to end through an HTTP gateway: `sftpsms serve --http-port 0` with a gateways.toml that routes
a prefix to a real provider HTTP server; an SFTP upload reaches the provider, and the receipts the
test posts to our inbound endpoint become delivery statuses (events and the delivery CSV)."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import httpx

from eventstore.domain import Account, DeliveryLog, batch_id, delivery_log_id, message_id
from tests.provider import Provider, running_provider
from tests.service import Service, running_service

NUMBERS = ["27831234501", "27831234502", "27831234503"]


@contextmanager
def http_service(tmp_path: Path, provider: Provider, *settings: str) -> Iterator[Service]:
    """The service with a gateway `bulkhttp` to `provider`, numbers starting 2783 routed to it."""
    data = tmp_path / "data"
    data.mkdir()
    lines = ["[gateways.bulkhttp]", 'type = "http"', f'url = "{provider.url}"', 'token = "out-secret"',
             'inbound_token = "in-secret"', "backoff = 0.05", *settings]
    (data / "gateways.toml").write_text("\n".join(lines) + "\n")
    with running_service(data, "--http-port", "0") as service:
        assert service.http_port
        service.add_account("acme")
        routed = service.cli("route", "add", "2783", "--gateway", "bulkhttp")
        assert routed.returncode == 0, routed.stderr
        yield service


def upload(service: Service, name: str, numbers: list[str]) -> UUID:
    contacts = [{"msisdn": n, "customerId": f"C{i}"} for i, n in enumerate(numbers)]
    with service.paramiko("acme") as sftp, sftp.open(f"Send_SMS/{name}", "wb") as remote:
        remote.write(json.dumps({"Version": 7, "Message_Template": "Hi from HTTP", "Contacts": contacts}).encode())
    folder, report = service.wait_report("acme", name)
    assert folder == "Processed" and report["messages_queued"] == len(numbers), report
    return UUID(report["file_id"])


def wait_for_statuses(service: Service, name: str, expected: dict[str, str]) -> None:
    path = service.folder("acme", "Processed") / f"{name}.delivery.csv"
    deadline = time.monotonic() + 30
    rows: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        if path.exists():
            rows = list(csv.DictReader(path.read_text().splitlines()))
            if {r["index"]: r["status"] for r in rows} == expected:
                return
        time.sleep(0.1)
    raise AssertionError((rows, service.log()[-3000:]))


def test_an_upload_routed_to_an_http_gateway_is_sent_and_its_receipts_recorded(tmp_path: Path) -> None:
    with running_provider() as provider, http_service(tmp_path, provider) as service:
        file_id = upload(service, "http.json", NUMBERS)

        deadline = time.monotonic() + 30
        while provider.sent < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert provider.sent == 3, service.log()[-3000:]
        assert {r.body["to"] for r in provider.requests} == {f"+{n}" for n in NUMBERS}
        assert {r.headers["authorization"] for r in provider.requests} == {"Bearer out-secret"}
        assert {r.body["text"] for r in provider.requests} == {"Hi from HTTP"}

        ids = {index: provider.ids[str(message_id(file_id, index))][0] for index in range(3)}
        statuses = {0: "DELIVRD", 1: "UNDELIV", 2: "EXPIRED"}
        base = f"http://127.0.0.1:{service.http_port}/gateways/bulkhttp"
        with httpx.Client(headers={"authorization": "Bearer in-secret"}) as client:
            assert client.post(f"{base}/receipts", json={"id": ids[0], "status": "ENROUTE"}).status_code == 202
            answer = client.post(
                f"{base}/receipts", json=[{"id": ids[i], "status": statuses[i]} for i in range(3)]
            )
            assert (answer.status_code, answer.json()) == (200, {"recorded": 3, "ignored": 0})
            assert client.post(f"{base}/receipts", json={"id": "x", "status": "DELIVRD"}, headers={"authorization": "Bearer no"}).status_code == 401

            reply = {"id": "R1", "from": f"+{NUMBERS[0]}", "to": "ACME", "text": "STOP", "in_reply_to": ids[0]}
            assert client.post(f"{base}/replies", json=reply).status_code == 200

        wait_for_statuses(service, "http.json", {"0": "delivered", "1": "failed", "2": "expired"})

        store = service.store()
        try:
            reported = [
                e for e in store.events.get(delivery_log_id(batch_id(file_id, 0)))
                if isinstance(e, DeliveryLog.DeliveryReported)
            ]
        finally:
            store.close()
        assert sorted((e.index, e.status) for e in reported) == [(0, "delivered"), (1, "failed"), (2, "expired")]

        deadline = time.monotonic() + 30  # the STOP reply opted the number out
        opted_out: list[str] = []
        while not opted_out and time.monotonic() < deadline:
            time.sleep(0.1)
            store = service.store()
            try:
                account = store.account("acme")
                opted_out = [n for e in store.events.get(account.id) if isinstance(e, Account.OptOutsAdded) for n in e.msisdns]
            finally:
                store.close()
        assert opted_out == [NUMBERS[0]], service.log()[-3000:]


def test_a_rejected_message_is_failed_and_an_unavailable_gateway_gets_the_message_again(tmp_path: Path) -> None:
    with running_provider() as provider, http_service(tmp_path, provider, "retries = 0", "concurrency = 1") as service:
        provider.script = [400, 503]  # the first message refused for good; the second: "try later"
        upload(service, "refused.json", NUMBERS[:2])
        wait_for_statuses(service, "refused.json", {"0": "failed", "1": "submitted"})
        assert len(provider.requests) == 3 and provider.sent == 1
