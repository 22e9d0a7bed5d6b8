"""Contact batches as stored-event rows, built directly: the fast path of pass 2.

`ContactBatch.open` / `queue` / `reject` / `skip_optout` / `seal` and then `save()` build an
aggregate, a domain-event object per contact and a StoredEvent per event before a row is written;
for a million contacts that is most of pass 2. `batch_rows` makes the very rows that path stores
(same originator id, versions, topics, and state bytes from the same transcoder) straight from
pass 1's outcomes. tests/test_contact_rows.py holds the two paths to byte-for-byte equality, and
the application reads the rows back as ordinary ContactBatch events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from eventstore.domain import OPTOUT_CODE, OPTOUT_DETAIL, ContactBatch, batch_id

# A stored-event row as the SQLite recorder inserts it: originator id (hex), version, topic, state.
Row = tuple[str, int, str, bytes]
# A contact's outcome as pass 1 spools it: index, msisdn, customer id, text, parts, code, detail.
# `code` None: a message is queued; OPTOUT_CODE: skipped; any other code: rejected.
SpooledOutcome = Sequence[Any]

AGGREGATE_TOPIC = get_topic(ContactBatch)
OPENED_TOPIC = get_topic(ContactBatch.BatchOpened)
QUEUED_TOPIC = get_topic(ContactBatch.MessageQueued)
REJECTED_TOPIC = get_topic(ContactBatch.ContactRejected)
OPTOUT_TOPIC = get_topic(ContactBatch.OptOutSkipped)
SEALED_TOPIC = get_topic(ContactBatch.BatchSealed)


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
    outcomes: Iterable[SpooledOutcome],
    encode: Callable[[Any], bytes],
) -> BatchRows:
    """The rows of `ContactBatch.open(...)`, one event per outcome, then `seal()`.

    The state dicts list their keys in the order eventsourcing's mapper finds them in an event's
    `__dict__` (timestamp first, then the event's fields as declared), and `encode` is the store's
    transcoder, so the bytes are the same."""
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
    for index, msisdn, customer_id, text, parts, code, detail in outcomes:
        version += 1
        if code is None:
            queued += 1
            parts_total += parts
            state = {
                "timestamp": timestamp,
                "index": index,
                "msisdn": msisdn or "",
                "customer_id": customer_id,
                "text": text or "",
                "parts": parts,
            }
            append((originator, version, QUEUED_TOPIC, encode(state)))
        elif code == OPTOUT_CODE:
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
