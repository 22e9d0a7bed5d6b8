"""What the dispatcher sends and what gateways report back; the interface every gateway implements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True)
class OutboundMessage:
    message_id: UUID  # deterministic: uuid5(file id, contact index); gateways de-duplicate by it
    batch_id: UUID
    file_id: UUID
    index: int
    account: str
    msisdn: str
    sender_id: str
    text: str
    parts: int


@dataclass(frozen=True)
class DeliveryReceipt:
    message_id: UUID
    batch_id: UUID
    file_id: UUID
    index: int
    account: str
    gateway_id: str
    status: str  # "delivered" | "failed" | "expired"
    at: datetime


class Gateway(Protocol):
    name: str

    async def submit(self, message: OutboundMessage) -> str:
        """Hand a message over; returns the gateway's id for it. Submitting the same message id
        again must not send it again (returns the first id)."""
        ...
