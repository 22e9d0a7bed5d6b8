"""End to end through an HTTP gateway: `sftpsms serve --http-port 0` with a gateways.toml that routes
a prefix to a real provider HTTP server; an SFTP upload reaches the provider, and the receipts the
test posts to our inbound endpoint become delivery statuses (events and the delivery CSV)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from uuid import UUID

import httpx

from eventstore.domain import DeliveryLog, batch_id, delivery_log_id, message_id
from tests.provider import running_provider
from tests.service import running_service

NUMBERS = ["27831234501", "27831234502", "27831234503"]


def test_an_upload_routed_to_an_http_gateway_is_sent_and_its_receipts_recorded(tmp_path: Path) -> None:
    with running_provider() as provider:
        data = tmp_path / "data"
        data.mkdir()
        (data / "gateways.toml").write_text(
            "[gateways.bulkhttp]\n"
            'type = "http"\n'
            f'url = "{provider.url}"\n'
            'token = "out-secret"\n'
            'inbound_token = "in-secret"\n'
            "backoff = 0.05\n"
        )
        with running_service(data, "--http-port", "0") as service:
            assert service.http_port
            service.add_account("acme")
            routed = service.cli("route", "add", "2783", "--gateway", "bulkhttp")
            assert routed.returncode == 0, routed.stderr
            contacts = [{"msisdn": n, "customerId": f"C{i}"} for i, n in enumerate(NUMBERS)]
            with service.paramiko("acme") as sftp, sftp.open("Send_SMS/http.json", "wb") as remote:
                remote.write(json.dumps({"Version": 7, "Message_Template": "Hi from HTTP", "Contacts": contacts}).encode())
            folder, report = service.wait_report("acme", "http.json")
            assert folder == "Processed" and report["messages_queued"] == 3, report
            file_id = UUID(report["file_id"])

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

            path = service.folder("acme", "Processed") / "http.json.delivery.csv"
            expected = {"0": "delivered", "1": "failed", "2": "expired"}
            deadline = time.monotonic() + 30
            rows: list[dict[str, str]] = []
            while time.monotonic() < deadline:
                if path.exists():
                    rows = list(csv.DictReader(path.read_text().splitlines()))
                    if {r["index"]: r["status"] for r in rows} == expected:
                        break
                time.sleep(0.1)
            assert {r["index"]: r["status"] for r in rows} == expected, (rows, service.log()[-3000:])

            store = service.store()
            try:
                reported = [
                    e for e in store.events.get(delivery_log_id(batch_id(file_id, 0)))
                    if isinstance(e, DeliveryLog.DeliveryReported)
                ]
            finally:
                store.close()
            assert sorted((e.index, e.status) for e in reported) == [(0, "delivered"), (1, "failed"), (2, "expired")]
