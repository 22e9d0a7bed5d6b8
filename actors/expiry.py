"""The expiry rule: a message that has no final status once its gateway's validity period has passed
since its submission is reported `expired` (SMPP's validity_period, applied by us).

No gateway owes us a receipt forever: an SMSC drops messages it could not deliver in time, a peer
may lose a receipt, a crash may lose one on our side. So a message does not stay `submitted`: at
its deadline it gets a final status like any other, and the delivery CSV, the webhooks and the
file's history (`sftpsms events`) show it.

How. The `deliveries` read model counts, per batch, messages submitted and statuses reported. Every
`expiry_interval` seconds this actor takes the batches with fewer reported than submitted whose
first submission is older than the shortest validity period, reads each one's MessageSubmitted
events and statuses, and for every message past its deadline puts an `expired` receipt on the
receipts actor's channel, as a gateway would. The receipts actor records it as DeliveryReported
like any receipt, once per message: a real receipt that arrived first wins, and one that arrives
later adds nothing. A batch is looked at again at its next deadline, not every round.

A message the dispatcher recorded as refused by its gateway (a `rejected-…` id) gets its `failed`
status from the dispatcher at once; one that a crash left without it gets it here, after
REJECTED_GRACE rather than a whole validity period.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import trio
from eventsourcing.application import AggregateNotFoundError

from actors.faults import log_failure
from actors.gateway import GatewayReceipt, GatewayReport
from eventstore.domain import DeliveryLog, DispatchLog, delivery_log_id, dispatch_log_id, message_id
from eventstore.projections import ReadModels
from eventstore.store import SmsStore
from sftpsms.config import Settings

log = logging.getLogger(__name__)

REJECTED_GRACE = 60.0  # seconds before a refused message without its `failed` status gets it here
REJECTED_PREFIX = "rejected-"  # the dispatcher's id for a message its gateway refused


@dataclass
class Expiry:
    """Finds the messages past their deadline. Runs its reads in a thread of its own (the reader
    store, like the dispatcher's batch loads), never in the writer's queue."""

    settings: Settings
    store: SmsStore
    validity: Mapping[str, float]  # gateway → seconds; gateways not listed: the longest
    next_look: dict[str, datetime] = field(default_factory=dict)  # batch → when to look again
    expired: int = 0

    @property
    def shortest(self) -> float:
        return min([REJECTED_GRACE, *self.validity.values()])

    def _validity(self, gateway: str, gateway_id: str) -> float:
        if gateway_id.startswith(REJECTED_PREFIX):
            return REJECTED_GRACE
        return self.validity.get(gateway, max(self.validity.values(), default=REJECTED_GRACE))

    def due(self, now: datetime) -> list[GatewayReceipt]:
        """The receipts to report now (in the caller's thread: it opens its own read-model connection)."""
        models = ReadModels(self.settings.readmodels_db)
        try:
            rows = models.awaited_batches((now - timedelta(seconds=self.shortest)).isoformat())
        finally:
            models.close()
        awaited = {row["batch_id"] for row in rows}
        for batch in list(self.next_look):
            if batch not in awaited:
                del self.next_look[batch]  # settled
        receipts: list[GatewayReceipt] = []
        for row in rows:
            batch = row["batch_id"]
            if self.next_look.get(batch, now) > now:
                continue
            found, next_deadline = self._batch(UUID(batch), now)
            receipts += found
            # Looked at again at its next deadline; or, when everything was found due, in a round
            # (to see that the receipts were recorded, or catch a message submitted since).
            interval = timedelta(seconds=self.settings.expiry_interval)
            self.next_look[batch] = next_deadline if next_deadline is not None else now + interval
        return receipts

    def _batch(self, batch: UUID, now: datetime) -> tuple[list[GatewayReceipt], datetime | None]:
        try:
            statuses = self.store.get(DeliveryLog, delivery_log_id(batch)).statuses
        except AggregateNotFoundError:
            statuses = {}
        receipts: list[GatewayReceipt] = []
        next_deadline: datetime | None = None
        file_id: UUID | None = None
        for event in self.store.events.get(dispatch_log_id(batch)):
            if isinstance(event, DispatchLog.DispatchStarted):
                file_id = UUID(event.file_id)
            if not isinstance(event, DispatchLog.MessageSubmitted) or event.index in statuses:
                continue
            assert file_id is not None  # the log's first event
            validity = self._validity(event.gateway, event.gateway_id)
            deadline = datetime.fromisoformat(event.submitted_at) + timedelta(seconds=validity)
            if deadline > now:
                next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
                continue
            rejected = event.gateway_id.startswith(REJECTED_PREFIX)
            receipts.append(
                GatewayReceipt(
                    gateway=event.gateway,
                    gateway_id=event.gateway_id,
                    status="failed" if rejected else "expired",
                    at=deadline,
                    error=(
                        "refused by the gateway (its answer was lost in a restart)"
                        if rejected
                        else f"no final status within the gateway's validity period ({validity:g} s)"
                    ),
                    message_id=message_id(file_id, event.index),
                )
            )
        return receipts, next_deadline


async def run_expiry(
    reports: trio.MemorySendChannel[GatewayReport],
    *,
    expiry: Expiry,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Report expired messages every `expiry_interval` seconds, until cancelled.

    Error handling: a failed round is logged and tried again next round (the read model and the
    events are the state; nothing is lost by skipping a round)."""
    task_status.started()
    with reports:
        while True:
            try:
                found: list[Any] = await trio.to_thread.run_sync(expiry.due, datetime.now(UTC))
            except Exception:
                log_failure(log, "looking for expired messages failed; trying again next round")
                found = []
            if found:
                log.info("expiry: %d messages without a final status past their validity period", len(found))
                expiry.expired += len(found)
            for receipt in found:
                await reports.send(receipt)
            await trio.sleep(expiry.settings.expiry_interval)
