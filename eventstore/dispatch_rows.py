"""MessageSubmitted and DeliveryReported events as stored-event rows: the fast path of the
dispatcher and of report recording, one event each per message sent.

At thousands of messages a second, `DispatchLog.submitted` (a domain-event object per message,
mutated into the aggregate) and `save()` (the protocol checks, StoredEvent objects, originator-id
conversions) are a third of the service's Python time. `submitted` here does to the aggregate
what the event would do (next version, the index noted, modified_on) and keeps the event's state
dict; `encode_rows` turns those and any ordinary pending events into the rows the row recorders
insert (SQLite's, PostgreSQL's); `reported` does the same for DeliveryLog.reported.
tests/test_dispatch_rows.py holds the two paths to byte-for-byte equality on both backends; the
rows read back as ordinary events. Stores that compress or encrypt take the aggregate path:
`as_events` turns the same rows-to-be into the events they stand for (SmsStore.record_submissions
decides).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper
from eventsourcing.utils import get_topic, resolve_topic

from eventstore.contact_rows import Row
from eventstore.domain import DeliveryLog, DispatchLog

SUBMITTED_TOPIC = get_topic(DispatchLog.MessageSubmitted)
REPORTED_TOPIC = get_topic(DeliveryLog.DeliveryReported)
EXPIRED_TOPIC = get_topic(DispatchLog.MessageExpired)


@dataclass(slots=True)
class PendingRow:
    """An event applied to its aggregate but not stored yet: its row without the encoding."""

    originator: str  # the aggregate id in hex, as the rows carry it
    version: int
    topic: str
    state: dict[str, Any]


def submitted(
    log: DispatchLog,
    *,
    index: int,
    gateway: str,
    gateway_ids: Sequence[str],
    parts: int,
    at: datetime,
    msisdn: str,
    customer_id: str | None,
) -> PendingRow | None:
    """`log.submitted(...)` with `timestamp=at`, returning the event as a row-to-be instead of a
    pending event object; None when the index was already submitted (as the method does nothing)."""
    if index in log.submitted_indexes:
        return None
    gateway_id = gateway_ids[0] if gateway_ids else ""
    # Key order as eventsourcing's mapper finds it in the event's __dict__: timestamp, then fields.
    state = {
        "timestamp": at,
        "index": index,
        "gateway": gateway,
        "gateway_id": gateway_id,
        "parts": parts,
        "submitted_at": at.isoformat(),
        "gateway_ids": list(gateway_ids),
        "msisdn": msisdn,
        "customer_id": customer_id,
    }
    return _applied(log, DispatchLog.MessageSubmitted, SUBMITTED_TOPIC, state)


def expired_all(log: DispatchLog, messages: Iterable[tuple[int, int]], *, at: datetime, reason: str) -> list[PendingRow]:
    """`expired` for each (index, parts) not submitted or expired yet, in one loop (a cancel's
    stored batches: no event object, no namespace per message)."""
    rows: list[PendingRow] = []
    at_text = at.isoformat()
    originator = log.id.hex
    done = log.submitted_indexes
    expired = log.expired_indexes
    version = log.version
    for index, parts in messages:
        if index in done or index in expired:
            continue
        expired.add(index)  # MessageExpired.apply
        version += 1
        state = {"timestamp": at, "index": index, "parts": parts, "at": at_text, "reason": reason}
        rows.append(PendingRow(originator, version, EXPIRED_TOPIC, state))
    if rows:
        log.version = version
        log.modified_on = at
    return rows


def reported(
    log: DeliveryLog,
    index: int,
    *,
    message_id: UUID,
    msisdn: str,
    customer_id: str | None,
    status: str,
    gateway: str,
    gateway_id: str,
    error: str | None,
    at: str,
    timestamp: datetime,
) -> PendingRow | None:
    """`log.reported(...)` with `timestamp`, as a row-to-be; None when the message has its status
    already (the method then records nothing either)."""
    if index in log.statuses:
        return None
    state = {
        "timestamp": timestamp,
        "index": index,
        "message_id": str(message_id),
        "account": log.account,
        "file_id": log.file_id,
        "msisdn": msisdn,
        "customer_id": customer_id,
        "status": status,
        "gateway": gateway,
        "gateway_id": gateway_id,
        "error": error,
        "at": at,
    }
    return _applied(log, DeliveryLog.DeliveryReported, REPORTED_TOPIC, state)


def _applied(aggregate: Any, event_class: Any, topic: str, state: dict[str, Any]) -> PendingRow:
    """What trigger_event does to the aggregate, without the event object: the event class's own
    apply() (it reads only the event's fields), then the next version and modified_on."""
    event_class.apply(SimpleNamespace(**state), aggregate)
    aggregate.version += 1
    aggregate.modified_on = state["timestamp"]
    return PendingRow(aggregate.id.hex, aggregate.version, topic, state)


def encode_rows(pending: Iterable[PendingRow], events: Iterable[Any], mapper: Mapper[Any], encode: Callable[[Any], bytes]) -> list[Row]:
    """The rows of pending rows and domain events together, each aggregate's in version order."""
    rows: list[Row] = [(p.originator, p.version, p.topic, encode(p.state)) for p in pending]
    for event in events:
        stored = mapper.to_stored_event(event)
        rows.append((stored.originator_id.hex, stored.originator_version, stored.topic, stored.state))  # type: ignore[union-attr]
    rows.sort(key=lambda row: (row[0], row[1]))
    return rows


def as_events(pending: Iterable[PendingRow], events: Iterable[Any] = ()) -> list[Any]:
    """The domain events that pending rows stand for, with ordinary `events`, in the order
    `encode_rows` writes them: for stores that take no rows, whose mapper then stores what
    `encode_rows` would (each event class built with the row's own fields, as trigger_event does)."""
    built = [
        resolve_topic(p.topic)(originator_id=UUID(p.originator), originator_version=p.version, **p.state)
        for p in pending
    ]
    return sorted([*built, *events], key=lambda event: (event.originator_id.hex, event.originator_version))
