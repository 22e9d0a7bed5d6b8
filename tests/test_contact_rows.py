"""The fast path of pass 2 stores exactly what the aggregate path stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import AggregateNotFoundError

from eventstore.contact_rows import QueuedMessage, SpooledBatch, batch_aggregate, batch_rows
from eventstore.domain import ContactBatch, batch_id
from eventstore.store import SmsStore, open_store
from sftpsms.errors import ErrorCode
from sftpsms.fileformat import Header
from sftpsms.intake import Outcome, Plan
from tests.backends import BACKEND, stored_rows

FILE = UUID("0b7c5e8e-5d0f-4a53-9d53-0e1f6c1b2a77")
OUTCOMES = [
    Outcome(0, "27831234567", "C1", text="Hi Thandi, R120 due.", parts=1),
    Outcome(1, "27831234568", None, text="Ünïcödé ok: €{}[]~" * 12, parts=2),
    Outcome(2, None, "C3", code=ErrorCode.REQUIRED_PARAMETER_MISSING, detail="msisdn is missing"),
    Outcome(3, "27831234569", "C4", code=ErrorCode.OPTOUT, detail="the number has opted out"),
    Outcome(4, "abc", None, code=ErrorCode.NO_NETWORK, detail="not a phone number"),
    Outcome(5, "27831234570", 'quote " and \\ back', text="line\nbreak", parts=1),
]
TIMESTAMPS = [
    datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC),  # no microseconds: isoformat drops them
]


def _plan(tmp_path: Path, *, scheduled: bool) -> Plan:
    header = Header(
        version=7, email=None, start=None, end=None, sender_id="ACME", check_optouts=True,
        message_template=None, max_errors=None, warnings=(), contacts_key="Contacts",
    )
    return Plan(
        header=header,
        sender_id="ACME",
        not_before=datetime(2026, 12, 1, 8, tzinfo=UTC) if scheduled else None,
        expires_at=datetime(2026, 12, 1, 18, tzinfo=UTC) if scheduled else None,
        spool=tmp_path / "spool.jsonl",
    )


def _rows(store: SmsStore) -> list[tuple[Any, ...]]:
    return stored_rows(store)


def _spooled(plan: Plan, number: int, timestamp: datetime) -> SpooledBatch:
    return SpooledBatch(
        file=FILE, account="acme", number=number, sender_id=plan.sender_id,
        not_before=plan.not_before.isoformat() if plan.not_before else None,
        expires_at=plan.expires_at.isoformat() if plan.expires_at else None,
        timestamp=timestamp,
        lines=[o.to_line().encode() + b"\n" for o in OUTCOMES],  # as read from the spool
    )


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SmsStore, SmsStore]]:
    slow, fast = open_store(tmp_path / "slow"), open_store(tmp_path / "fast")
    yield slow, fast
    slow.close()
    fast.close()


def _save_both(
    stores: tuple[SmsStore, SmsStore], plan: Plan, timestamp: datetime, numbers: range
) -> None:
    slow, fast = stores
    assert fast.writes_batch_rows
    slow.save_batches([batch_aggregate(_spooled(plan, n, timestamp)) for n in numbers])
    fast.save_batch_rows(
        [
            batch_rows(
                file=FILE,
                account="acme",
                number=n,
                sender_id=plan.sender_id,
                not_before=plan.not_before.isoformat() if plan.not_before else None,
                expires_at=plan.expires_at.isoformat() if plan.expires_at else None,
                timestamp=timestamp,
                lines=[o.to_line().encode() + b"\n" for o in OUTCOMES],  # as read from the spool
                encode=fast.row_encoder(),
            )
            for n in numbers
        ]
    )


@pytest.mark.parametrize("timestamp", TIMESTAMPS)
@pytest.mark.parametrize("scheduled", [False, True])
def test_fast_rows_are_byte_identical_to_the_aggregate_path(
    stores: tuple[SmsStore, SmsStore], tmp_path: Path, timestamp: datetime, scheduled: bool
) -> None:
    _save_both(stores, _plan(tmp_path, scheduled=scheduled), timestamp, range(3))
    slow, fast = stores
    expected = _rows(slow)
    assert len(expected) == 3 * (len(OUTCOMES) + 2)
    assert _rows(fast) == expected


def test_queue_batches_writes_rows_where_the_store_takes_them_and_aggregates_elsewhere_the_same(
    stores: tuple[SmsStore, SmsStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow, fast = stores
    plan = _plan(tmp_path, scheduled=True)
    batches = [_spooled(plan, n, TIMESTAMPS[0]) for n in range(3)]
    assert fast.queue_batches(batches[:2]) == 2
    assert fast.queue_batches(batches) == 1  # a resumed file: the stored batches are skipped
    monkeypatch.setattr(SmsStore, "writes_batch_rows", property(lambda store: store is not slow))
    assert slow.queue_batches(batches[:2]) == 2
    assert slow.queue_batches(batches) == 1
    assert len(_rows(fast)) == 3 * (len(OUTCOMES) + 2)
    assert _rows(fast) == _rows(slow)


def test_the_rows_path_is_taken_on_this_backend(stores: tuple[SmsStore, SmsStore]) -> None:
    _, fast = stores
    assert fast.writes_batch_rows, f"the {BACKEND} store takes rows"


def test_fast_rows_read_back_as_the_same_aggregate_and_events(
    stores: tuple[SmsStore, SmsStore], tmp_path: Path
) -> None:
    _save_both(stores, _plan(tmp_path, scheduled=True), TIMESTAMPS[0], range(2))
    slow, fast = stores
    for number in range(2):
        from_slow, from_fast = slow.batch(build_id(number)), fast.batch(build_id(number))
        assert isinstance(from_fast, ContactBatch)
        assert vars(from_fast) == vars(from_slow)
        assert (from_fast.queued, from_fast.parts, from_fast.optouts, from_fast.sealed) == (3, 4, 1, True)
        assert list(fast.events.get(from_fast.id)) == list(slow.events.get(from_slow.id))
    sealed = list(fast.sealed_batches(FILE, 2))
    assert [len(s.errors) for s in sealed] == [3, 3]


def test_fast_rows_of_a_stored_batch_are_skipped(stores: tuple[SmsStore, SmsStore], tmp_path: Path) -> None:
    plan = _plan(tmp_path, scheduled=False)
    _save_both(stores, plan, TIMESTAMPS[0], range(1))
    _, fast = stores
    again = [
        batch_rows(
            file=FILE, account="acme", number=n, sender_id="ACME", not_before=None, expires_at=None,
            timestamp=TIMESTAMPS[0], lines=[], encode=fast.row_encoder(),
        )
        for n in (0, 1)
    ]
    before = len(_rows(fast))
    assert fast.save_batch_rows(again) == 1
    assert len(_rows(fast)) == before + 2  # only batch 1: opened and sealed


@pytest.mark.parametrize("scheduled", [False, True])
def test_a_queued_batch_read_from_rows_holds_the_aggregates_fields_and_queued_messages(
    stores: tuple[SmsStore, SmsStore], tmp_path: Path, scheduled: bool
) -> None:
    _save_both(stores, _plan(tmp_path, scheduled=scheduled), TIMESTAMPS[0], range(2))
    _, fast = stores
    for number in range(2):
        aggregate = fast.batch(build_id(number))
        read = fast.queued_batch(build_id(number))
        assert read.batch_id == aggregate.id
        assert (read.file_id, read.account, read.sender_id, read.not_before, read.expires_at) == (
            aggregate.file_id, aggregate.account, aggregate.sender_id, aggregate.not_before, aggregate.expires_at,
        )
        assert read.messages == [
            QueuedMessage(e.index, e.msisdn, e.customer_id, e.text, e.parts)
            for e in fast.events.get(aggregate.id)
            if isinstance(e, ContactBatch.MessageQueued)
        ]
        assert [m.index for m in read.messages] == [0, 1, 5]  # rejected and opted-out contacts are not sent


def test_a_queued_batch_reads_the_same_through_the_aggregate_where_rows_are_not_plain_json(
    stores: tuple[SmsStore, SmsStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save_both(stores, _plan(tmp_path, scheduled=True), TIMESTAMPS[0], range(1))
    _, fast = stores
    from_rows = fast.queued_batch(build_id(0))
    monkeypatch.setattr(SmsStore, "writes_batch_rows", property(lambda _: False))
    assert fast.queued_batch(build_id(0)) == from_rows


def test_an_unknown_queued_batch_is_not_found(stores: tuple[SmsStore, SmsStore]) -> None:
    _, fast = stores
    with pytest.raises(AggregateNotFoundError):
        fast.queued_batch(build_id(7))


def build_id(number: int) -> UUID:
    return batch_id(FILE, number)
