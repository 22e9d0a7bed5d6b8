"""What the dispatcher sends and what gateways report back; the interface every gateway implements.

A gateway has two sides. Outbound, the dispatcher awaits `submit(message)` (the rate limits are the
dispatcher's job, not the gateway's). Inbound, the gateway puts what its peer reports — delivery
receipts and replies (mobile-originated messages) — on the reports channel it was given; the
receipts actor matches them to messages and records them as events.

Receipts name a message by the *gateway's* id for it (what `submit` returned), never by ours: real
SMSCs know only their own ids, and write them in hex or decimal, upper or lower case, with or
without leading zeros; `sftpsms.gatewayids` turns them into keys that match either way. A gateway
that knows our id (the simulator, an HTTP peer that echoes it) may put it in `message_id` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

import trio


@dataclass(frozen=True)
class OutboundMessage:
    message_id: UUID  # deterministic: uuid5(file id, contact index); gateways de-duplicate by it
    batch_id: UUID
    file_id: UUID
    index: int
    account: str
    msisdn: str  # E.164 digits, no "+"
    sender_id: str
    text: str
    parts: int
    customer_id: str | None = None
    # The gateway chosen for it (an auto-reply goes back through the gateway its inbound reply
    # came from); None: the route of its number decides.
    gateway: str | None = None


@dataclass(frozen=True)
class GatewayReceipt:
    """A delivery receipt from a gateway's peer. `status` is already one of ours
    ("delivered" | "failed" | "expired"; `sftpsms.gatewayids.final_status` maps SMSC words);
    intermediate states (accepted, en route) are not reported."""

    gateway: str
    gateway_id: str  # the id `submit` returned for the message, or for one of its parts
    status: str
    at: datetime
    error: str | None = None  # the peer's error code or text, when it gave one
    message_id: UUID | None = None  # ours, when the gateway knows it


@dataclass(frozen=True)
class GatewayReply:
    """A mobile-originated message (a reply) that arrived through a gateway."""

    gateway: str
    reply_id: str  # the peer's id for the reply: the same reply delivered twice is recorded once
    msisdn: str  # who sent it, E.164 digits
    to: str  # the address it was sent to (our sender id / short code), as the peer gave it
    text: str
    at: datetime
    in_reply_to: str | None = None  # the gateway id of the message it answers, when the peer knows
    message_id: UUID | None = None  # ours, when the gateway knows it


GatewayReport = GatewayReceipt | GatewayReply


class GatewayRejected(Exception):
    """The gateway refused the message for good (a 4xx, an SMSC error that retrying cannot fix).
    The dispatcher records it as submitted-and-failed; it is never retried."""

    def __init__(self, gateway: str, reason: str) -> None:
        super().__init__(f"{gateway} rejected the message: {reason}")
        self.gateway = gateway
        self.reason = reason


class GatewayUnavailable(Exception):
    """The gateway cannot take messages now (connection down, retries used up). The dispatcher
    keeps the message queued and tries again later; nothing is recorded."""


class Gateway(Protocol):
    name: str

    async def submit(self, message: OutboundMessage) -> tuple[str, ...]:
        """Hand a message over; returns the gateway's ids for it: one, or one per part when the
        gateway sends the parts as separate submissions (SMPP). Submitting the same message id
        again must not send it again where the gateway can tell (return the first ids).
        Raises GatewayRejected (final) or GatewayUnavailable (try later)."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The gateway's own background work until cancelled (connections, keep-alives, inbound
        reports onto its reports channel). Calls task_status.started() once it can submit."""
        ...
