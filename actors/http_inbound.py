"""Our inbound HTTP endpoint: gateways' peers post delivery receipts and replies to it.

    POST /gateways/{name}/receipts   {"id": "...", "status": "DELIVRD", "at": "...", "error": "..."}
    POST /gateways/{name}/replies    {"id": "...", "from": "+2783...", "to": "ACME", "text": "STOP"}
    GET  /health                     {"status": "ok"}

A body is one JSON object or an array of them. Answers are JSON: 200 `{"recorded": n, "ignored":
m}`, 202 when every receipt was an intermediate status (accepted, en route: nothing to record), and
`{"error": "..."}` with 400 (malformed), 401 (bad token), 404 (no such gateway), 405, 413 or 503.

The server is a small HTTP/1.1 server on trio built on h11: no thread, no second event loop, one
task per connection, keep-alive. It knows nothing about gateways; it serves `Routes`, a mapping of
(method, path) to a handler, which `inbound_routes` builds for one HTTP gateway.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

import h11
import orjson
import trio

from actors.gateway import GatewayReceipt, GatewayReply, GatewayReport
from sftpsms.gatewayids import final_status
from sftpsms.gateways import HttpGatewayConfig
from sftpsms.names import quoted

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes in one request body
MAX_ITEMS = 1000  # receipts or replies in one request
MAX_CONNECTIONS = 256  # served at once; further ones wait in the listen backlog
READ_TIMEOUT = 30.0  # seconds a connection may stay silent while we wait for (more of) a request
WRITE_TIMEOUT = 30.0  # seconds to hand over one response
DELIVER_TIMEOUT = 20.0  # seconds to wait for room on the reports channel before answering 503
RECEIVE_SIZE = 65536


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # percent-decoded, without the query string
    headers: Mapping[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: Any  # anything orjson can write
    headers: tuple[tuple[str, str], ...] = ()


class HttpError(Exception):
    """A request we refuse; the client gets `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers

    def response(self) -> HttpResponse:
        return HttpResponse(self.status, {"error": self.message}, self.headers)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
Routes = Mapping[tuple[str, str], Handler]


async def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, {"status": "ok"})


# ---- the server -------------------------------------------------------------------------------


async def serve_http(
    routes: Routes,
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `routes` (and GET /health) on host:port until cancelled; reports the bound port
    (port 0: any free one) through task_status.started.

    Resource handling: each connection is its own task (trio.serve_listeners closes its stream when
    it ends); at most MAX_CONNECTIONS are served at once. A connection silent for READ_TIMEOUT is
    closed.
    Error handling: a malformed request gets a 4xx and its connection closed; a handler that raises
    HttpError answers with it; any other exception in a handler is a bug, logged and answered with
    500 — it never stops the server.
    """
    table: dict[tuple[str, str], Handler] = {("GET", "/health"): health, **routes}
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = int(listeners[0].socket.getsockname()[1])
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
    task_status.started(bound)
    await trio.serve_listeners(partial(_serve_connection, routes=table, limiter=limiter), listeners)


class _BodyTooLarge(Exception):
    pass


async def _serve_connection(stream: trio.SocketStream, *, routes: Routes, limiter: trio.CapacityLimiter) -> None:
    async with limiter:
        try:
            await _serve_requests(stream, routes)
        except Exception:  # a bug here must cost one connection, not the server (and the service)
            log.exception("http connection failed")


async def _serve_requests(stream: trio.SocketStream, routes: Routes) -> None:
    connection = h11.Connection(h11.SERVER)
    while True:
        try:
            request = await _read_request(connection, stream)
        except h11.RemoteProtocolError as error:
            if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(connection, stream, HttpError(error.error_status_hint, str(error)).response())
            return
        except _BodyTooLarge:
            await _send(connection, stream, HttpError(413, f"body over {MAX_BODY} bytes").response())
            return
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            return  # idle, too slow, or gone
        if request is None:
            return
        response = await _respond(routes, request)
        if not await _send(connection, stream, response, head=request.method == "HEAD"):
            return
        if connection.our_state is h11.MUST_CLOSE:
            return
        try:
            connection.start_next_cycle()
        except h11.LocalProtocolError:
            return


async def _next_event(connection: h11.Connection, stream: trio.SocketStream) -> Any:
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            with trio.fail_after(READ_TIMEOUT):
                data = await stream.receive_some(RECEIVE_SIZE)
            connection.receive_data(data)  # b"": the peer closed
            continue
        return event


async def _read_request(connection: h11.Connection, stream: trio.SocketStream) -> HttpRequest | None:
    event = await _next_event(connection, stream)
    if isinstance(event, h11.ConnectionClosed):
        return None
    if not isinstance(event, h11.Request):
        raise h11.RemoteProtocolError(f"expected a request, got {type(event).__name__}")
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers}
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise _BodyTooLarge
    if connection.they_are_waiting_for_100_continue:  # e.g. curl, for large bodies
        with trio.fail_after(WRITE_TIMEOUT):
            await stream.send_all(connection.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
    body = bytearray()
    while True:
        part = await _next_event(connection, stream)
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > MAX_BODY:
                raise _BodyTooLarge
        elif isinstance(part, h11.EndOfMessage):
            break
        else:
            raise h11.RemoteProtocolError(f"unexpected {type(part).__name__} in a request body")
    path = unquote(urlsplit(event.target.decode("latin-1")).path)
    return HttpRequest(event.method.decode("latin-1").upper(), path, headers, bytes(body))


async def _respond(routes: Routes, request: HttpRequest) -> HttpResponse:
    method = "GET" if request.method == "HEAD" else request.method
    handler = routes.get((method, request.path))
    if handler is None:
        allowed = sorted(method for method, path in routes if path == request.path)
        if allowed:
            return HttpError(405, f"{request.method} not allowed", (("allow", ", ".join(allowed)),)).response()
        return HttpError(404, f"no such endpoint: {request.path}").response()
    try:
        return await handler(request)
    except HttpError as error:
        log.info("http method=%s path=%s status=%d error=%s", quoted(request.method), quoted(request.path), error.status, error.message)
        return error.response()
    except Exception:
        log.exception("http handler for %s %s failed", quoted(request.method), quoted(request.path))
        return HttpError(500, "internal error").response()


async def _send(connection: h11.Connection, stream: trio.SocketStream, response: HttpResponse, *, head: bool = False) -> bool:
    """Write a response (without its body for HEAD); False when the peer is gone or too slow."""
    payload = orjson.dumps(response.body)
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(payload))),
        *response.headers,
    ]
    events = [h11.Response(status_code=response.status, headers=headers), h11.Data(data=payload), h11.EndOfMessage()]
    if head:
        del events[1]
    data = b"".join(connection.send(event) or b"" for event in events)
    try:
        with trio.fail_after(WRITE_TIMEOUT):
            await stream.send_all(data)
    except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


# ---- an HTTP gateway's receipts and replies ------------------------------------------------------


def inbound_routes(config: HttpGatewayConfig, reports: trio.MemorySendChannel[GatewayReport]) -> dict[tuple[str, str], Handler]:
    """The receipts and replies endpoints of one HTTP gateway, putting what they get on `reports`."""

    async def receipts(request: HttpRequest) -> HttpResponse:
        check_token(config, request)
        found = [receipt_from_json(config.name, item) for item in json_items(request)]
        return await _deliver(reports, found)

    async def replies(request: HttpRequest) -> HttpResponse:
        check_token(config, request)
        found: list[GatewayReport | None] = [reply_from_json(config.name, item) for item in json_items(request)]
        return await _deliver(reports, found)

    prefix = f"/gateways/{config.name}"
    return {("POST", f"{prefix}/receipts"): receipts, ("POST", f"{prefix}/replies"): replies}


async def _deliver(reports: trio.MemorySendChannel[GatewayReport], found: list[Any]) -> HttpResponse:
    # Everything was validated before the first send: a 400 never leaves half a batch recorded.
    # A 503 may (the receipts actor is behind, or we are stopping); the peer's retry is harmless:
    # a message keeps its first final status, and a reply is recorded once per reply id.
    recorded = [report for report in found if report is not None]
    try:
        with trio.fail_after(DELIVER_TIMEOUT):
            for report in recorded:
                await reports.send(report)
    except trio.TooSlowError:
        raise HttpError(503, "busy, try again later", (("retry-after", "5"),)) from None
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        raise HttpError(503, "shutting down, try again later", (("retry-after", "5"),)) from None
    body = {"recorded": len(recorded), "ignored": len(found) - len(recorded)}
    return HttpResponse(200 if recorded or not found else 202, body)


def check_token(config: HttpGatewayConfig, request: HttpRequest) -> None:
    if not config.inbound_token:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.inbound_token.encode()):
        raise HttpError(401, "missing or wrong bearer token", (("www-authenticate", "Bearer"),))


def json_items(request: HttpRequest) -> list[dict[str, Any]]:
    """The body's objects: one object, or an array of at most MAX_ITEMS of them."""
    try:
        document = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise HttpError(400, "the body is not JSON") from None
    items = document if isinstance(document, list) else [document]
    if len(items) > MAX_ITEMS:
        raise HttpError(400, f"more than {MAX_ITEMS} items in one request")
    for number, item in enumerate(items):
        if not isinstance(item, dict):
            raise HttpError(400, f"item {number}: expected a JSON object")
    return items


def receipt_from_json(gateway: str, item: dict[str, Any]) -> GatewayReceipt | None:
    """A receipt, or None for an intermediate status (the message is still on its way)."""
    gateway_id = _text(item, "id", required=True)
    word = _text(item, "status", required=True)
    try:
        status = final_status(word)
    except ValueError as error:
        raise HttpError(400, str(error)) from None
    if status is None:
        return None
    return GatewayReceipt(
        gateway=gateway,
        gateway_id=gateway_id,
        status=status,
        at=_at(item),
        error=_text(item, "error") or None,
        message_id=_uuid(item),
    )


def reply_from_json(gateway: str, item: dict[str, Any]) -> GatewayReply:
    msisdn = _text(item, "from", required=True).strip().removeprefix("+")
    if not msisdn.isdigit():
        raise HttpError(400, "'from' must be a number in international form")
    return GatewayReply(
        gateway=gateway,
        reply_id=_text(item, "id", required=True),
        msisdn=msisdn,
        to=_text(item, "to", required=True),
        text=_text(item, "text", required=True, empty=True),
        at=_at(item),
        in_reply_to=_text(item, "in_reply_to") or None,
        message_id=_uuid(item),
    )


def _text(item: dict[str, Any], key: str, *, required: bool = False, empty: bool = False) -> str:
    value = item.get(key)
    if value is None:
        if required:
            raise HttpError(400, f"{key!r} is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise HttpError(400, f"{key!r} must be a string")
    text = str(value)
    if required and not empty and not text.strip():
        raise HttpError(400, f"{key!r} must not be empty")
    return text


def _at(item: dict[str, Any]) -> datetime:
    raw = _text(item, "at")
    if not raw:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise HttpError(400, f"'at' is not an ISO 8601 time: {raw!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _uuid(item: dict[str, Any]) -> UUID | None:
    raw = _text(item, "message_id")
    if not raw:
        return None
    try:
        return UUID(raw)
    except ValueError:
        raise HttpError(400, f"'message_id' is not a uuid: {raw!r}") from None
