"""Contact batches as stored-event rows, built directly: the fast path of pass 2.

`ContactBatch.open` / `queue` / `reject` / `skip_optout` / `seal` and then `save()` build an
aggregate, a domain-event object per contact and a StoredEvent per event before a row is written;
for a million contacts that is most of pass 2. `batch_rows` makes the very rows that path stores
(same originator id, versions, topics, and state bytes from the same transcoder) straight from
pass 1's spool lines. A queued message's line is already the JSON object of its MessageQueued
fields (sftpsms.intake.Outcome.to_line, written by the pass-one processes), so its state is the
encoded timestamp joined to the line's bytes: nothing is parsed or encoded per message here.
tests/test_contact_rows.py holds the two paths to byte-for-byte equality, and the application
reads the rows back as ordinary ContactBatch events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.utils import get_topic

from eventstore.domain import OPTOUT_CODE, OPTOUT_DETAIL, ContactBatch, batch_id

# A stored-event row as the row recorders insert it: originator id (hex; PostgreSQL's recorder
# parses it into a uuid), version, topic, state.
Row = tuple[str, int, str, bytes]
# A contact's outcome as pass 1 spools it (one line): a queued message as the JSON object of its
# MessageQueued fields; otherwise a JSON array of index, msisdn, customer id, text, parts, code,
# detail, where code OPTOUT_CODE means skipped and any other rejected.
SpoolLine = bytes

AGGREGATE_TOPIC = get_topic(ContactBatch)
OPENED_TOPIC = get_topic(ContactBatch.BatchOpened)
QUEUED_TOPIC = get_topic(ContactBatch.MessageQueued)
REJECTED_TOPIC = get_topic(ContactBatch.ContactRejected)
OPTOUT_TOPIC = get_topic(ContactBatch.OptOutSkipped)
SEALED_TOPIC = get_topic(ContactBatch.BatchSealed)
ROUTED_TOPIC = get_topic(ContactBatch.BatchRouted)
OBJECT = ord("{")


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """A contact batch as pass 2 hands it to the store (SmsStore.queue_batches): its opening
    fields and its contacts' spool lines, one event each."""

    file: UUID
    account: str
    number: int
    sender_id: str
    not_before: str | None
    expires_at: str | None
    timestamp: datetime
    lines: Sequence[SpoolLine]

    def rows(self, encode: Callable[[Any], bytes]) -> BatchRows:
        return batch_rows(
            file=self.file, account=self.account, number=self.number, sender_id=self.sender_id,
            not_before=self.not_before, expires_at=self.expires_at, timestamp=self.timestamp,
            lines=self.lines, encode=encode,
        )


def batch_aggregate(batch: SpooledBatch) -> ContactBatch:
    """The same batch the general way: `ContactBatch.open(...)`, an event per spooled outcome,
    `seal()` (what `batch_rows` stores, for stores that take no rows)."""
    aggregate = ContactBatch.open(
        file=batch.file, account=batch.account, number=batch.number, sender_id=batch.sender_id,
        not_before=batch.not_before, expires_at=batch.expires_at, timestamp=batch.timestamp,
    )
    for line in batch.lines:
        fields = orjson.loads(line)
        if isinstance(fields, dict):
            aggregate.queue(fields["index"], fields["msisdn"] or "", fields["customer_id"], fields["text"] or "",
                            fields["parts"])
            continue
        index, msisdn, _customer_id, _text, _parts, code, detail = fields
        if code == OPTOUT_CODE:
            aggregate.skip_optout(index, msisdn or "")
        else:
            aggregate.reject(index, msisdn, code, detail or "")
    aggregate.seal()
    return aggregate


@dataclass(frozen=True, slots=True)
class BatchRows:
    """One contact batch ready to insert: its aggregate id and its rows, versions 1..n."""

    batch_id: UUID
    rows: list[Row]


def batch_rows(
    *,
    file: UUID,
    account: str,
    number: int,
    sender_id: str,
    not_before: str | None,
    expires_at: str | None,
    timestamp: datetime,
    lines: Iterable[SpoolLine],
    encode: Callable[[Any], bytes],
) -> BatchRows:
    """The rows of `ContactBatch.open(...)`, one event per spooled outcome, then `seal()`.

    The state dicts list their keys in the order eventsourcing's mapper finds them in an event's
    `__dict__` (timestamp first, then the event's fields as declared), and `encode` is the store's
    transcoder (compact JSON: SmsStore.writes_batch_rows checks), so the bytes are the same."""
    aggregate = batch_id(file, number)
    originator = aggregate.hex
    rows: list[Row] = [
        (
            originator,
            1,
            OPENED_TOPIC,
            encode(
                {
                    "timestamp": timestamp,
                    "originator_topic": AGGREGATE_TOPIC,
                    "file_id": str(file),
                    "account": account,
                    "number": number,
                    "sender_id": sender_id,
                    "not_before": not_before,
                    "expires_at": expires_at,
                }
            ),
        )
    ]
    append = rows.append
    queued = parts_total = 0
    errors: list[dict[str, Any]] = []
    version = 1
    # `{"timestamp":"...",` : a queued message's state is this and its line after the `{`.
    before_fields = encode({"timestamp": timestamp})[:-1] + b","
    for line in lines:
        version += 1
        if line[0] == OBJECT:
            message = line.rstrip(b"\n")
            queued += 1
            parts_total += int(message[message.rindex(b":") + 1 : -1])  # "parts" comes last
            append((originator, version, QUEUED_TOPIC, before_fields + message[1:]))
            continue
        index, msisdn, customer_id, text, parts, code, detail = orjson.loads(line)
        if code == OPTOUT_CODE:
            number_ = msisdn or ""
            errors.append({"index": index, "msisdn": number_, "code": OPTOUT_CODE, "detail": OPTOUT_DETAIL})
            state = {"timestamp": timestamp, "index": index, "msisdn": number_}
            append((originator, version, OPTOUT_TOPIC, encode(state)))
        else:
            error = {"index": index, "msisdn": msisdn, "code": code, "detail": detail or ""}
            errors.append(error)
            append((originator, version, REJECTED_TOPIC, encode({"timestamp": timestamp, **error})))
    sealed = {"timestamp": timestamp, "queued": queued, "parts": parts_total, "errors": errors}
    append((originator, version + 1, SEALED_TOPIC, encode(sealed)))
    return BatchRows(aggregate, rows)


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A MessageQueued event's fields."""

    index: int
    msisdn: str
    customer_id: str | None
    text: str
    parts: int


@dataclass(frozen=True, slots=True)
class QueuedBatch:
    """A stored contact batch as the dispatcher sends it: its opening fields and queued messages."""

    batch_id: UUID
    file_id: str
    account: str
    sender_id: str
    not_before: str | None
    expires_at: str | None
    messages: list[QueuedMessage]
    gateway: str | None = None  # BatchRouted: the gateway to send through instead of by route


def read_queued_batch(batch: UUID, rows: Iterable[tuple[str, bytes]]) -> QueuedBatch:
    """What the dispatcher needs of a batch, from its stored (topic, state) rows in version order:
    the JSON of BatchOpened and of each MessageQueued, without an aggregate or a domain-event object
    per message (loading a batch that way, twice, took ~50 ms of the GIL per 1 000 messages while a
    big file's pass 2 was writing). Only for rows the store writes as plain JSON
    (SmsStore.writes_batch_rows); tests/test_contact_rows.py holds it equal to the aggregate."""
    opened: dict[str, Any] | None = None
    gateway: str | None = None
    messages: list[QueuedMessage] = []
    append = messages.append
    for topic, state in rows:
        if topic == QUEUED_TOPIC:
            fields = orjson.loads(state)
            append(
                QueuedMessage(fields["index"], fields["msisdn"], fields["customer_id"], fields["text"], fields["parts"])
            )
        elif topic == OPENED_TOPIC:
            opened = orjson.loads(state)
        elif topic == ROUTED_TOPIC:
            gateway = orjson.loads(state)["gateway"]
    if opened is None:
        raise ValueError(f"batch {batch} has no BatchOpened event")
    return QueuedBatch(
        batch_id=batch,
        file_id=opened["file_id"],
        account=opened["account"],
        sender_id=opened["sender_id"],
        not_before=opened["not_before"],
        expires_at=opened["expires_at"],
        messages=messages,
        gateway=gateway,
    )


def spooled_errors(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    """The contact errors (opt-outs included) that the batches of these spool lines seal, as
    `batch_rows` puts them in BatchSealed: what a processed file's report lists. A validation
    (actors/validator.py) reads them from its spool without storing a batch."""
    errors: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip() or line[0] == OBJECT:
            continue
        index, msisdn, _customer_id, _text, _parts, code, detail = orjson.loads(line)
        if code == OPTOUT_CODE:
            errors.append({"index": index, "msisdn": msisdn or "", "code": OPTOUT_CODE, "detail": OPTOUT_DETAIL})
        else:
            errors.append({"index": index, "msisdn": msisdn, "code": code, "detail": detail or ""})
    return errors
