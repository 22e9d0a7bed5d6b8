"""The HTTP gateway against a real provider HTTP server (tests/provider.py): body and auth, retries,
rejections, timeouts, de-duplication by message id."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from uuid import UUID, uuid4

import pytest
import trio

from actors.gateway import GatewayRejected, GatewayReport, GatewayUnavailable, OutboundMessage
from actors.http_gateway import HttpGateway
from sftpsms.gateways import GatewayConfigError, HttpGatewayConfig, parse_gateways
from tests.provider import Provider, running_provider


@pytest.fixture
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        yield running


def config(url: str, **overrides: object) -> HttpGatewayConfig:
    values: dict[str, object] = {"name": "bulkhttp", "url": url, "token": "out-secret", "backoff": 0.01, "timeout": 2.0}
    values.update(overrides)
    return HttpGatewayConfig(**values)  # type: ignore[arg-type]


def message(index: int = 0, parts: int = 1, message_id: UUID | None = None) -> OutboundMessage:
    return OutboundMessage(
        message_id=message_id or uuid4(),
        batch_id=uuid4(),
        file_id=uuid4(),
        index=index,
        account="acme",
        msisdn="27831234567",
        sender_id="ACME",
        text="Hello ☃",
        parts=parts,
        customer_id="C1",
    )


@asynccontextmanager
async def running_gateway(gateway_config: HttpGatewayConfig) -> AsyncIterator[HttpGateway]:
    send, receive = trio.open_memory_channel[GatewayReport](10)
    gateway = HttpGateway(gateway_config, send)
    with receive:
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.run)
            yield gateway
            nursery.cancel_scope.cancel()


async def test_submit_posts_the_message_as_json_with_the_bearer_token(provider: Provider) -> None:
    sms = message()
    async with running_gateway(config(provider.url)) as gateway:
        ids = await gateway.submit(sms)
    assert ids == ("P000001",)
    [request] = provider.requests
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == "Bearer out-secret"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "message_id": str(sms.message_id),
        "to": "+27831234567",
        "from": "ACME",
        "text": "Hello ☃",
        "parts": 1,
        "encoding": "ucs2",  # ☃ is not GSM 03.38
        "customer_id": "C1",
        "account": "acme",
    }


async def test_no_token_sends_no_authorization_header(provider: Provider) -> None:
    async with running_gateway(config(provider.url, token="")) as gateway:
        await gateway.submit(message())
    assert "authorization" not in provider.requests[0].headers


async def test_5xx_is_retried_with_backoff_and_the_message_is_sent_once(provider: Provider) -> None:
    provider.script = [503, 500, 502]
    async with running_gateway(config(provider.url, retries=3)) as gateway:
        ids = await gateway.submit(message())
    assert ids == ("P000001",)
    assert len(provider.requests) == 4 and provider.sent == 1
    assert len({r.body["message_id"] for r in provider.requests}) == 1


async def test_429_is_retried_like_a_5xx(provider: Provider) -> None:
    provider.script = [429]
    async with running_gateway(config(provider.url)) as gateway:
        assert await gateway.submit(message()) == ("P000001",)
    assert len(provider.requests) == 2


async def test_retry_after_makes_the_next_try_wait_that_long(provider: Provider) -> None:
    provider.script, provider.retry_after = [503], "0.3"
    async with running_gateway(config(provider.url)) as gateway:
        started = trio.current_time()
        assert await gateway.submit(message()) == ("P000001",)
        assert trio.current_time() - started >= 0.3
    assert len(provider.requests) == 2


async def test_a_retry_after_too_long_to_wait_is_unavailable_at_once(provider: Provider) -> None:
    provider.script, provider.retry_after = [429], "3600"
    async with running_gateway(config(provider.url)) as gateway:
        with pytest.raises(GatewayUnavailable, match="retry after 3600 s"):
            await gateway.submit(message())
    assert len(provider.requests) == 1


async def test_5xx_after_the_last_retry_is_unavailable(provider: Provider) -> None:
    provider.script = [500, 500, 500]
    async with running_gateway(config(provider.url, retries=2)) as gateway:
        with pytest.raises(GatewayUnavailable, match="HTTP 500"):
            await gateway.submit(message())
    assert len(provider.requests) == 3 and provider.sent == 0


async def test_4xx_is_rejected_for_good_without_a_retry(provider: Provider) -> None:
    provider.script = [400]
    async with running_gateway(config(provider.url)) as gateway:
        with pytest.raises(GatewayRejected, match="HTTP 400") as caught:
            await gateway.submit(message())
    assert caught.value.gateway == "bulkhttp" and "scripted 400" in caught.value.reason
    assert len(provider.requests) == 1


async def test_timeouts_are_retried_then_the_gateway_is_unavailable(provider: Provider) -> None:
    provider.script = [1.0, 1.0, 1.0]
    async with running_gateway(config(provider.url, timeout=0.2, retries=2)) as gateway:
        with pytest.raises(GatewayUnavailable, match="no answer within 0.2 s"):
            await gateway.submit(message())
    assert len(provider.requests) == 3


async def test_a_timeout_then_an_answer_is_sent(provider: Provider) -> None:
    provider.script = [1.0]
    async with running_gateway(config(provider.url, timeout=0.3, retries=2)) as gateway:
        ids = await gateway.submit(message())
    # The stalled first request was taken too: the provider de-duplicated the retry by message id.
    assert ids == ("P000001",)


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with running_gateway(config(f"http://127.0.0.1:{port}/sms", retries=1)) as gateway:
        with pytest.raises(GatewayUnavailable, match="ConnectError"):
            await gateway.submit(message())


async def test_resubmitting_a_message_id_returns_the_first_ids(provider: Provider) -> None:
    sms = message()
    async with running_gateway(config(provider.url)) as gateway:
        first = await gateway.submit(sms)
        await gateway.submit(message(index=1))
        again = await gateway.submit(sms)
    assert first == again == ("P000001",)
    assert provider.sent == 2 and len(provider.requests) == 3


async def test_ids_per_part_are_all_returned(provider: Provider) -> None:
    provider.ids_per_part = True
    async with running_gateway(config(provider.url)) as gateway:
        assert await gateway.submit(message(parts=3)) == ("P000001", "P000002", "P000003")


async def test_concurrent_submits_share_the_connection_pool(provider: Provider) -> None:
    results: list[tuple[str, ...]] = []
    async with running_gateway(config(provider.url, concurrency=4)) as gateway:

        async def sender(start: int) -> None:
            for index in range(start, 40, 4):
                results.append(await gateway.submit(message(index=index)))

        async with trio.open_nursery() as nursery:
            for start in range(4):
                nursery.start_soon(sender, start)
    assert len(results) == 40 and provider.sent == 40 and len(set(results)) == 40


async def test_cancelling_run_closes_the_client_and_the_reports_channel(provider: Provider) -> None:
    send, receive = trio.open_memory_channel[GatewayReport](1)
    gateway = HttpGateway(config(provider.url), send)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run)
        await gateway.submit(message())
        nursery.cancel_scope.cancel()
    with pytest.raises(GatewayUnavailable, match="not running"):
        await gateway.submit(message())
    with pytest.raises(trio.EndOfChannel):
        receive.receive_nowait()


async def test_submit_before_run_is_unavailable(provider: Provider) -> None:
    send, _ = trio.open_memory_channel[GatewayReport](1)
    with pytest.raises(GatewayUnavailable, match="not running"):
        await HttpGateway(config(provider.url), send).submit(message())


def test_gateways_file_checks_http_settings() -> None:
    parsed = parse_gateways({"gateways": {"bulk": {"type": "http", "url": "https://x.example/sms", "concurrency": 3}}})
    gateway = parsed["bulk"]
    assert isinstance(gateway, HttpGatewayConfig) and gateway.concurrency == 3
    for bad in ({"url": "ftp://x"}, {"url": "http://x", "concurrency": 0}, {"url": "http://x", "retries": -1}):
        with pytest.raises(GatewayConfigError):
            parse_gateways({"gateways": {"bulk": {"type": "http", **bad}}})
