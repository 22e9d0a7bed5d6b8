"""The HTTP gateway: submits messages to a provider's JSON API; its receipts and replies come to our
inbound endpoint (actors/http_inbound.py).

    POST <url>   Authorization: Bearer <token>
    {"message_id": "<our uuid>", "to": "+27831234567", "from": "ACME", "text": "...", "parts": 1,
     "customer_id": "C1" | null, "account": "acme"}

A 2xx answer names the provider's id for the message, `{"id": "..."}`, or one per part, `{"ids":
[...]}`. The provider is told our message id so that it can de-duplicate: a message re-submitted
after a crash or a lost answer gets the first ids back where the provider does so.

Errors: a 5xx, 408, 429, a timeout or a connection error is retried `retries` times with exponential
backoff (longer if the answer's Retry-After asks; over MAX_RETRY_AFTER, at once unavailable), then
the message is handed back as GatewayUnavailable (the dispatcher pauses the gateway).
Any other 4xx is GatewayRejected: final, the message is recorded as failed. So is a 2xx whose body
names no id — the provider may have taken it, but cannot tell us which id its receipt will carry.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
import trio

from actors.gateway import GatewayRejected, GatewayReport, GatewayUnavailable, OutboundMessage
from actors.http_inbound import Handler, inbound_routes
from sftpsms.gateways import HttpGatewayConfig
from sftpsms.gsm import text_encoding

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0  # seconds to close the connection pool on shutdown
RETRYABLE_4XX = frozenset({408, 429})  # "try again": request timeout, too many requests
MAX_DETAIL = 200  # characters of a provider's error body kept in a rejection
MAX_RETRY_AFTER = 30.0  # seconds of a Retry-After we wait in submit; longer ones end the tries


class HttpGateway:
    """One provider reached over HTTP. `concurrency` requests go at once (the dispatcher runs as
    many sender tasks), each on a client of its own holding one keep-alive connection: httpcore's
    shared connection pool gets slower the more requests it has in flight (scripts/bench_http, 32
    senders, a provider taking 20 ms: ~270 submits/s through one pool, ~650 with a client each)."""

    def __init__(self, config: HttpGatewayConfig, reports: trio.MemorySendChannel[GatewayReport]) -> None:
        self.config = config
        self.name = config.name
        self.concurrency = config.concurrency
        self._reports = reports
        self._running = False
        self._idle: list[httpx.AsyncClient] = []  # clients between two submits
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if config.token:
            self._headers["authorization"] = f"Bearer {config.token}"

    def routes(self) -> dict[tuple[str, str], Handler]:
        """Our inbound endpoints for this gateway's receipts and replies (serve them with serve_http)."""
        return inbound_routes(self.config, self._reports)

    @staticmethod
    def body(message: OutboundMessage) -> dict[str, Any]:
        return {
            "message_id": str(message.message_id),
            "to": f"+{message.msisdn}",
            "from": message.sender_id,
            "text": message.text,
            "parts": message.parts,
            "encoding": text_encoding(message.text),  # "gsm" | "ucs2": how the text is counted and sent
            "customer_id": message.customer_id,
            "account": message.account,
        }

    async def submit(self, message: OutboundMessage) -> tuple[str, ...]:
        if not self._running:
            raise GatewayUnavailable(f"{self.name}: not running")
        client = self._idle.pop() if self._idle else self._new_client()
        try:
            return await self._submit(client, message)
        finally:
            if self._running:
                self._idle.append(client)
            else:  # run() ended while this request was out: it could not close this client
                await _close(client)

    def _new_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout), limits=limits)

    async def _submit(self, client: httpx.AsyncClient, message: OutboundMessage) -> tuple[str, ...]:
        content = orjson.dumps(self.body(message))
        tries = self.config.retries + 1
        delay = self.config.backoff
        asked = 0.0  # what the provider's Retry-After asked for
        problem = ""
        for attempt in range(1, tries + 1):
            if attempt > 1:
                wait = max(delay, asked)
                log.info(
                    "gateway=%s message=%s try=%d/%d failed: %s; retrying in %.2f s",
                    self.name, message.message_id, attempt - 1, tries, problem, wait,
                )
                await trio.sleep(wait)
                delay *= 2
            try:
                with trio.fail_after(self.config.timeout):
                    response = await client.post(self.config.url, content=content, headers=self._headers)
            except (trio.TooSlowError, httpx.TimeoutException):
                problem = f"no answer within {self.config.timeout:g} s"
                continue
            except httpx.HTTPError as error:  # connection refused or reset, a broken answer
                problem = f"{type(error).__name__}: {error}"
                continue
            status = response.status_code
            if status >= 500 or status in RETRYABLE_4XX:
                problem = f"HTTP {status}"
                asked = _retry_after(response)
                if asked > MAX_RETRY_AFTER:  # longer than a sender should sit: the dispatcher pauses
                    raise GatewayUnavailable(f"{self.name}: {problem}, retry after {asked:g} s")
                continue
            if 400 <= status < 500:
                raise GatewayRejected(self.name, f"HTTP {status}: {response.text[:MAX_DETAIL]}")
            if not 200 <= status < 300:
                raise GatewayUnavailable(f"{self.name}: unexpected HTTP {status} from {self.config.url}")
            return self._ids(response)
        raise GatewayUnavailable(f"{self.name}: {problem} ({tries} tries)")

    def _ids(self, response: httpx.Response) -> tuple[str, ...]:
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise GatewayRejected(self.name, "the answer is not JSON") from None
        if isinstance(answer, dict):
            ids = answer.get("ids")
            if ids is None and answer.get("id") is not None:
                ids = [answer["id"]]
            if isinstance(ids, list) and ids and all(_is_id(i) for i in ids):
                return tuple(str(i) for i in ids)
        raise GatewayRejected(self.name, f"the answer names no id: {response.text[:MAX_DETAIL]}")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Submit works from task_status.started() until cancelled; then the clients and their
        connections are closed. Receipts and replies arrive through `routes()`; the reports
        channel is closed on exit."""
        with self._reports:
            self._running = True
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._running = False
                idle, self._idle = self._idle, []
                for client in idle:
                    await _close(client)


def _retry_after(response: httpx.Response) -> float:
    """The seconds a Retry-After header asks for; 0 when absent or an HTTP date (rare for APIs)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0


async def _close(client: httpx.AsyncClient) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
        await client.aclose()


def _is_id(value: Any) -> bool:
    return (isinstance(value, str) and bool(value.strip())) or (isinstance(value, int) and not isinstance(value, bool))
