"""The receipts actor: records gateways' delivery receipts as DeliveryReported events.

It is the only writer of DeliveryLog aggregates, so it keeps recently used ones in memory and
writes receipts in groups (one transaction per group) instead of one per receipt.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from functools import partial
from uuid import UUID

import trio
from eventsourcing.application import AggregateNotFoundError

from actors.gateway import DeliveryReceipt
from actors.writer import StoreClient
from eventstore.domain import DeliveryLog, delivery_log_id
from eventstore.store import SmsStore

log = logging.getLogger(__name__)

GROUP = 500
GROUP_WAIT = 0.1  # seconds to wait for more receipts before writing a group
CACHE_SIZE = 256


class _LogCache:
    def __init__(self) -> None:
        self.logs: OrderedDict[UUID, DeliveryLog] = OrderedDict()

    def get(self, store: SmsStore, receipt: DeliveryReceipt) -> DeliveryLog:
        key = delivery_log_id(receipt.batch_id)
        delivery = self.logs.get(key)
        if delivery is None:
            try:
                delivery = store.get(DeliveryLog, key)
            except AggregateNotFoundError:
                delivery = DeliveryLog.start(batch=receipt.batch_id, file=receipt.file_id, account=receipt.account)
            self.logs[key] = delivery
            while len(self.logs) > CACHE_SIZE:
                self.logs.popitem(last=False)
        self.logs.move_to_end(key)
        return delivery

    def record(self, store: SmsStore, receipts: list[DeliveryReceipt]) -> None:
        touched: dict[UUID, DeliveryLog] = {}
        for receipt in receipts:
            delivery = self.get(store, receipt)
            delivery.reported(receipt.index, receipt.status, receipt.gateway_id, receipt.at.isoformat())
            touched[delivery.id] = delivery
        try:
            store.save(*touched.values())
        except Exception:
            self.logs.clear()  # forget possibly half-applied state; reload from the store next time
            raise


async def run_receipts(
    inbox: trio.MemoryReceiveChannel[DeliveryReceipt],
    *,
    store: StoreClient,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Record receipts until the inbox closes. A failed group is logged and dropped (the simulator's
    receipts are deterministic, and real gateways re-send unacknowledged ones)."""
    cache = _LogCache()
    task_status.started()
    with inbox:
        ended = False
        while not ended:
            try:
                group = [await inbox.receive()]
            except trio.EndOfChannel:
                return
            with trio.move_on_after(GROUP_WAIT):
                while len(group) < GROUP:
                    try:
                        group.append(await inbox.receive())
                    except trio.EndOfChannel:
                        ended = True
                        break
            try:
                await store.run(partial(cache.record, receipts=group))
            except Exception:
                log.exception("recording %d receipts failed", len(group))
