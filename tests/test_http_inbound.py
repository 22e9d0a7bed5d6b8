"""Our inbound HTTP endpoint, with real HTTP requests (httpx) to serve_http on a loopback port."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4

import httpx
import pytest
import trio

from actors import http_inbound
from actors.gateway import GatewayReceipt, GatewayReply, GatewayReport
from actors.http_inbound import MAX_BODY, inbound_routes, serve_http
from sftpsms.gateways import HttpGatewayConfig

TOKEN = "in-secret"


@dataclass
class Endpoint:
    client: httpx.AsyncClient
    reports: trio.MemoryReceiveChannel[GatewayReport]
    base: str

    async def post(self, path: str, body: object, *, token: str | None = TOKEN) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        return await self.client.post(f"{self.base}{path}", json=body, headers=headers)

    def nothing_reported(self) -> bool:
        try:
            self.reports.receive_nowait()
        except trio.WouldBlock:
            return True
        return False


@asynccontextmanager
async def endpoint(inbound_token: str = TOKEN) -> AsyncIterator[Endpoint]:
    send, receive = trio.open_memory_channel[GatewayReport](10)
    gateway = HttpGatewayConfig(name="bulkhttp", url="http://unused.invalid/", inbound_token=inbound_token)
    with send, receive:
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            port = await nursery.start(lambda task_status: serve_http(
                inbound_routes(gateway, send), host="127.0.0.1", port=0, task_status=task_status,
            ))
            assert port > 0
            yield Endpoint(client, receive, f"http://127.0.0.1:{port}")
            nursery.cancel_scope.cancel()


async def test_a_receipt_lands_on_the_reports_channel() -> None:
    ours = uuid4()
    async with endpoint() as http:
        response = await http.post(
            "/gateways/bulkhttp/receipts",
            {"id": "P000001", "status": "DELIVRD", "at": "2026-11-25T10:00:00Z", "message_id": str(ours)},
        )
        assert (response.status_code, response.json()) == (200, {"recorded": 1, "ignored": 0})
        report = http.reports.receive_nowait()
    assert report == GatewayReceipt(
        gateway="bulkhttp",
        gateway_id="P000001",
        status="delivered",
        at=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
        message_id=ours,
    )


async def test_a_failed_receipt_keeps_the_peers_error() -> None:
    async with endpoint() as http:
        response = await http.post("/gateways/bulkhttp/receipts", {"id": 77, "status": "undeliv", "error": "absent subscriber"})
        assert response.status_code == 200
        report = http.reports.receive_nowait()
    assert isinstance(report, GatewayReceipt)
    assert (report.gateway_id, report.status, report.error, report.message_id) == ("77", "failed", "absent subscriber", None)


async def test_a_reply_lands_on_the_reports_channel() -> None:
    async with endpoint() as http:
        response = await http.post(
            "/gateways/bulkhttp/replies",
            {"id": "R1", "from": "+27831234567", "to": "ACME", "text": "STOP", "in_reply_to": "P000001"},
        )
        assert response.status_code == 200
        report = http.reports.receive_nowait()
    assert isinstance(report, GatewayReply)
    assert (report.gateway, report.reply_id, report.msisdn, report.to, report.text, report.in_reply_to) == (
        "bulkhttp", "R1", "27831234567", "ACME", "STOP", "P000001",
    )


async def test_an_array_of_receipts_is_recorded_in_one_request() -> None:
    async with endpoint() as http:
        body = [{"id": f"P{n}", "status": "delivered"} for n in range(3)] + [{"id": "P9", "status": "ENROUTE"}]
        response = await http.post("/gateways/bulkhttp/receipts", body)
        assert (response.status_code, response.json()) == (200, {"recorded": 3, "ignored": 1})
        got = [http.reports.receive_nowait() for _ in range(3)]
        assert http.nothing_reported()
    assert [r.gateway_id for r in got if isinstance(r, GatewayReceipt)] == ["P0", "P1", "P2"]


async def test_an_intermediate_status_is_accepted_with_202_and_ignored() -> None:
    async with endpoint() as http:
        response = await http.post("/gateways/bulkhttp/receipts", {"id": "P1", "status": "ACCEPTD"})
        assert (response.status_code, response.json()) == (202, {"recorded": 0, "ignored": 1})
        assert http.nothing_reported()


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", TOKEN[:-1]])
async def test_a_missing_or_wrong_token_is_401(token: str | None) -> None:
    async with endpoint() as http:
        response = await http.post("/gateways/bulkhttp/receipts", {"id": "P1", "status": "DELIVRD"}, token=token)
        assert response.status_code == 401
        assert response.json() == {"error": "missing or wrong bearer token"}
        assert response.headers["www-authenticate"] == "Bearer"
        assert http.nothing_reported()


async def test_without_an_inbound_token_no_token_is_needed() -> None:
    async with endpoint(inbound_token="") as http:
        response = await http.post("/gateways/bulkhttp/receipts", {"id": "P1", "status": "DELIVRD"}, token=None)
        assert response.status_code == 200


async def test_an_unknown_gateway_is_404() -> None:
    async with endpoint() as http:
        response = await http.post("/gateways/other/receipts", {"id": "P1", "status": "DELIVRD"})
        assert response.status_code == 404
        assert "no such endpoint" in response.json()["error"]


async def test_a_get_on_a_post_endpoint_is_405() -> None:
    async with endpoint() as http:
        response = await http.client.get(f"{http.base}/gateways/bulkhttp/receipts")
        assert response.status_code == 405 and response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "not JSON"),
        (b'"a string"', "expected a JSON object"),
        (b'{"status": "DELIVRD"}', "'id' is required"),
        (b'{"id": "P1"}', "'status' is required"),
        (b'{"id": "P1", "status": "GONE_FISHING"}', "unknown delivery status"),
        (b'{"id": "P1", "status": "DELIVRD", "at": "yesterday"}', "not an ISO 8601 time"),
        (b'{"id": "P1", "status": "DELIVRD", "message_id": "nope"}', "not a uuid"),
        (b'[{"id": "P1", "status": "DELIVRD"}, {"id": "P2"}]', "'status' is required"),
    ],
)
async def test_a_malformed_receipt_is_400_and_nothing_is_recorded(body: bytes, error: str) -> None:
    async with endpoint() as http:
        response = await http.client.post(
            f"{http.base}/gateways/bulkhttp/receipts", content=body, headers={"authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 400
        assert error in response.json()["error"]
        assert http.nothing_reported()


async def test_a_reply_from_a_non_number_is_400() -> None:
    async with endpoint() as http:
        response = await http.post("/gateways/bulkhttp/replies", {"id": "R1", "from": "ACME", "to": "x", "text": "hi"})
        assert response.status_code == 400 and "'from'" in response.json()["error"]


async def test_a_body_over_the_limit_is_413() -> None:
    async with endpoint() as http:
        response = await http.client.post(
            f"{http.base}/gateways/bulkhttp/receipts", content=b" " * (MAX_BODY + 1),
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 413


async def test_health_answers_ok_and_the_connection_is_kept_alive() -> None:
    async with endpoint() as http:
        for _ in range(3):
            response = await http.client.get(f"{http.base}/health")
            assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_a_client_expecting_100_continue_gets_it_at_once() -> None:
    # Clients that send "Expect: 100-continue" (older curl for bodies over 1 KiB) wait a second for it.
    body = json.dumps([{"id": f"P{n}", "status": "DELIVRD", "error": "-" * 200} for n in range(8)])
    async with endpoint() as http:
        started = trio.current_time()
        done = await trio.run_process(
            ["curl", "-sS", "-H", f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/json", "-H", "Expect: 100-continue",
             "--data-binary", body, f"{http.base}/gateways/bulkhttp/receipts"],
            capture_stdout=True,
        )
        assert json.loads(done.stdout) == {"recorded": 8, "ignored": 0}
        assert trio.current_time() - started < 0.9


async def test_a_full_reports_channel_answers_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_inbound, "DELIVER_TIMEOUT", 0.2)
    async with endpoint() as http:  # its reports channel holds 10; nobody reads it
        body = [{"id": f"P{n}", "status": "DELIVRD"} for n in range(11)]
        response = await http.post("/gateways/bulkhttp/receipts", body)
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert response.json() == {"error": "busy, try again later"}


async def test_head_on_health_answers_without_a_body() -> None:
    async with endpoint() as http:
        response = await http.client.head(f"{http.base}/health")
        assert response.status_code == 200 and response.content == b""
        assert (await http.client.get(f"{http.base}/health")).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /health HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    ],
)
async def test_a_malformed_request_gets_400_and_the_server_goes_on(raw: bytes) -> None:
    async with endpoint() as http:
        port = int(http.base.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(raw)
            answer = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(4096):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert (await http.client.get(f"{http.base}/health")).status_code == 200
