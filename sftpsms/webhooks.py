"""Webhook payloads: the JSON body of a delivery status or a reply, its Standard Webhooks headers,
secrets, and the retry schedule. Pure: the caller gives the time."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24

# The fields of each kind of body, as the events name them (DeliveryLog in eventstore.domain).
DELIVERY_FIELDS = ("message_id", "account", "file_id", "msisdn", "customer_id", "status", "gateway", "gateway_id", "error", "at")
REPLY_FIELDS = ("message_id", "account", "file_id", "msisdn", "customer_id", "text", "gateway", "reply_id", "opt_out", "at")
FIELDS = {"delivery": DELIVERY_FIELDS, "reply": REPLY_FIELDS}


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` and base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def is_secret(secret: str) -> bool:
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        return len(base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)) >= 16
    except ValueError:
        return False


def body(kind: str, event: Mapping[str, Any]) -> bytes:
    """The POST body for one event: `{"type", "timestamp", "data"}`, keys sorted, so the same
    event always gives the same bytes (replays are byte-identical)."""
    data = {name: event.get(name) for name in FIELDS[kind]}
    return orjson.dumps({"type": kind, "timestamp": data["at"], "data": data}, option=orjson.OPT_SORT_KEYS)


def signed_headers(secret: str, webhook_id: str, payload: bytes, now: datetime) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` (now, whole seconds) and `webhook-signature` (v1, HMAC-SHA256
    of `id.timestamp.body`), as the standardwebhooks library computes and verifies them."""
    timestamp = int(now.timestamp())
    signer = Webhook(secret)
    signature = signer.sign(webhook_id, datetime.fromtimestamp(timestamp, tz=UTC), payload.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def retry_delays(first: float, cap: float) -> Iterator[float]:
    """Seconds to wait before each retry: `first`, doubling, at most `cap`."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)
