"""Our inbound HTTP endpoint: gateways' peers post delivery receipts and replies to it.

    POST /gateways/{name}/receipts   {"id": "...", "status": "DELIVRD", "at": "...", "error": "..."}
    POST /gateways/{name}/replies    {"id": "...", "from": "+2783...", "to": "ACME", "text": "STOP"}
    GET  /health                     {"status": "ok"}

A body is one JSON object or an array of them. Answers are JSON: 200 `{"recorded": n, "ignored":
m}`, 202 when every receipt was an intermediate status (accepted, en route: nothing to record), and
`{"error": "..."}` with 400 (malformed), 401 (bad token), 404 (no such gateway), 405, 413 or 503.

The endpoints are served by the node's one HTTP server (actors/web: hypercorn on the service's trio
loop, no thread, no second event loop), beside the REST API. This module knows nothing about the
server: it offers `Routes`, a mapping of (method, path) to a handler, which `inbound_routes` builds
for one HTTP gateway.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
import trio

from actors.gateway import GatewayReceipt, GatewayReply, GatewayReport
from sftpsms.gatewayids import final_status
from sftpsms.gateways import HttpGatewayConfig

if TYPE_CHECKING:
    from actors.web.context import WebContext

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes in one request body
MAX_ITEMS = 1000  # receipts or replies in one request
DELIVER_TIMEOUT = 20.0  # seconds to wait for room on the reports channel before answering 503


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
    context: WebContext | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `routes` (and GET /health; with a context, the REST API) on host:port until
    cancelled; reports the bound port (port 0: any free one) through task_status.started. The one
    HTTP server of the node (actors/web): hypercorn on this trio loop.

    Error handling: a malformed request gets a 4xx and its connection closed; a handler that raises
    HttpError answers with it; any other exception in a handler is a bug, logged and answered with
    500: it never stops the server."""
    from actors.web.app import build_app
    from actors.web.server import serve_app

    await serve_app(build_app(routes, context), host=host, port=port, task_status=task_status)


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
