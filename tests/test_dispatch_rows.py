"""The dispatcher's fast path stores exactly what DispatchLog.submitted and save() store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import eventsourcing.domain
import pytest
from eventsourcing.persistence import IntegrityError

from eventstore import dispatch_rows
from eventstore.dispatch_rows import PendingRow
from eventstore.domain import DispatchLog
from eventstore.store import SmsStore, open_store
from tests.backends import stored_rows

BATCH = UUID("5f0c1f53-3e0b-4c8e-9d0c-1c0ffee00001")
FILE = UUID("5f0c1f53-3e0b-4c8e-9d0c-1c0ffee00002")
AT = datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC)
# (index, gateway ids, parts, msisdn, customer id): one id, one per part, odd characters, none.
SUBMISSIONS: list[tuple[int, tuple[str, ...], int, str, str | None]] = [
    (0, ("sim-0001",), 1, "27831234567", "C1"),
    (2, ("0A1B", "0a1c", "0A1D"), 3, "27831234568", None),
    (1, ("id with \"quotes\" and ünïcode",), 1, "27831234569", 'c "2"'),
]


def _rows(store: SmsStore) -> list[tuple[Any, ...]]:
    return stored_rows(store)


def save_progress(store: SmsStore, events: list[Any], refunds: dict[Any, int], rows: list[PendingRow] | None = None) -> None:
    """The dispatcher's flush: the events alone on the aggregate side, rows and events on the fast."""
    store.record_submissions(rows or [], events, refunds)


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SmsStore, SmsStore]]:
    # Events the dispatcher triggers the ordinary way (started, expired, finished) take the clock's
    # time: one fixed time, so the two stores' rows can be compared byte for byte.
    monkeypatch.setattr(eventsourcing.domain, "datetime_now_with_tzinfo", lambda: AT)
    slow, fast = open_store(tmp_path / "slow"), open_store(tmp_path / "fast")
    yield slow, fast
    slow.close()
    fast.close()


def _started(store: SmsStore) -> DispatchLog:
    log = DispatchLog.start(batch=BATCH, file=FILE, account="acme")
    store.save(log)
    return store.get(DispatchLog, log.id)  # type: ignore[no-any-return]


def _both(stores: tuple[SmsStore, SmsStore]) -> tuple[DispatchLog, DispatchLog]:
    """The same history on both stores: three submissions, one expiry, the end; written by the
    aggregate path on `slow` and as rows (with the expiry and the end as events) on `fast`."""
    slow, fast = stores
    assert fast.writes_batch_rows
    a, b = _started(slow), _started(fast)
    rows: list[PendingRow] = []
    for n, (index, ids, parts, msisdn, customer) in enumerate(SUBMISSIONS):
        at = AT + timedelta(seconds=n)
        a.submitted(index, "sim", ids, parts, at.isoformat(), msisdn=msisdn, customer_id=customer, timestamp=at)
        row = dispatch_rows.submitted(
            b, index=index, gateway="sim", gateway_ids=ids, parts=parts, at=at, msisdn=msisdn, customer_id=customer
        )
        assert row is not None
        rows.append(row)
        if n == 1:  # an ordinary event between rows of the same log
            a.expired(7, 2, AT.isoformat())
            b.expired(7, 2, AT.isoformat())
    a.finish()
    b.finish()
    save_progress(slow, list(a.collect_events()), {})
    save_progress(fast, list(b.collect_events()), {}, rows)
    return a, b


def test_rows_are_byte_identical_to_the_aggregate_path(stores: tuple[SmsStore, SmsStore]) -> None:
    _both(stores)
    slow, fast = stores
    expected = _rows(slow)
    assert len(expected) == 1 + len(SUBMISSIONS) + 2
    assert _rows(fast) == expected


def test_cancelled_expiry_rows_are_byte_identical_to_the_aggregate_path(stores: tuple[SmsStore, SmsStore]) -> None:
    """A cancel expires a whole file's unsent messages as rows (actors.dispatcher._expire_stored)."""
    slow, fast = stores
    a, b = _started(slow), _started(fast)
    a.submitted(0, "sim", ("x",), 1, AT.isoformat(), msisdn="27831234567", customer_id=None, timestamp=AT)
    b.submitted(0, "sim", ("x",), 1, AT.isoformat(), msisdn="27831234567", customer_id=None, timestamp=AT)
    messages = ((0, 1), (1, 2), (2, 1), (1, 2))  # a submitted one and a repeat add nothing
    for index, parts in messages:
        a.expired(index, parts, AT.isoformat(), reason="cancelled")
    rows = dispatch_rows.expired_all(b, messages, at=AT, reason="cancelled")
    assert len(rows) == 2 and (b.version, b.expired_indexes) == (a.version, a.expired_indexes)
    a.finish()
    b.finish()
    save_progress(slow, list(a.collect_events()), {})
    save_progress(fast, list(b.collect_events()), {}, rows)
    assert _rows(fast) == _rows(slow)
    expired = [e for e in fast.events.get(b.id) if isinstance(e, DispatchLog.MessageExpired)]
    assert [(e.index, e.parts, e.reason) for e in expired] == [(1, 2, "cancelled"), (2, 1, "cancelled")]


def test_rows_read_back_as_the_same_aggregate_and_events(stores: tuple[SmsStore, SmsStore]) -> None:
    a, b = _both(stores)
    slow, fast = stores
    assert vars(b) == vars(a)
    from_fast = fast.get(DispatchLog, b.id)
    assert vars(from_fast) == vars(slow.get(DispatchLog, a.id))
    assert from_fast.submitted_indexes == {0: "sim-0001", 2: "0A1B", 1: 'id with "quotes" and ünïcode'}
    assert from_fast.expired_indexes == {7} and from_fast.finished and from_fast.version == 6
    submitted = [e for e in fast.events.get(b.id) if isinstance(e, DispatchLog.MessageSubmitted)]
    assert [(e.index, e.gateway_ids, e.timestamp) for e in submitted] == [
        (0, ["sim-0001"], AT), (2, ["0A1B", "0a1c", "0A1D"], AT + timedelta(seconds=1)),
        (1, ['id with "quotes" and ünïcode'], AT + timedelta(seconds=2)),
    ]


def test_a_message_is_submitted_once(stores: tuple[SmsStore, SmsStore]) -> None:
    _, fast = stores
    log = _started(fast)
    first = dispatch_rows.submitted(log, index=0, gateway="sim", gateway_ids=["x"], parts=1, at=AT, msisdn="1", customer_id=None)
    again = dispatch_rows.submitted(log, index=0, gateway="sim", gateway_ids=["y"], parts=1, at=AT, msisdn="1", customer_id=None)
    assert first is not None and again is None and log.version == 2


def test_rows_of_a_log_changed_elsewhere_are_refused(stores: tuple[SmsStore, SmsStore]) -> None:
    # Two writers of one log (cannot happen in one service; guards a second one): the second
    # save of version 2 fails as a save() would, and nothing of it is stored.
    _, fast = stores
    one = _started(fast)
    two = fast.get(DispatchLog, one.id)
    rows = [dispatch_rows.submitted(log, index=i, gateway="sim", gateway_ids=["x"], parts=1, at=AT, msisdn="1", customer_id=None)
            for i, log in ((0, one), (1, two))]
    save_progress(fast, [], {}, [rows[0]])  # type: ignore[list-item]
    before = _rows(fast)
    with pytest.raises(IntegrityError):
        save_progress(fast, [], {}, [rows[1]])  # type: ignore[list-item]
    assert _rows(fast) == before


def test_a_new_logs_start_is_stored_before_its_rows(stores: tuple[SmsStore, SmsStore]) -> None:
    # The dispatcher starts a log in memory; DispatchStarted stays a pending event while the
    # first submissions become rows. One flush stores them in version order.
    _, fast = stores
    log = DispatchLog.start(batch=BATCH, file=FILE, account="acme")
    rows = [dispatch_rows.submitted(log, index=i, gateway="sim", gateway_ids=[f"g{i}"], parts=1, at=AT, msisdn="1",
                                    customer_id=None) for i in (1, 0)]
    save_progress(fast, list(log.collect_events()), {}, rows)  # type: ignore[arg-type]
    assert [(version, topic.rsplit(".", 1)[1]) for _, _, version, topic, _ in _rows(fast)] == [
        (1, "DispatchStarted"), (2, "MessageSubmitted"), (3, "MessageSubmitted")
    ]
    assert fast.get(DispatchLog, log.id).submitted_indexes == {1: "g1", 0: "g0"}


def test_delivery_report_rows_are_byte_identical_to_the_aggregate_path(stores: tuple[SmsStore, SmsStore]) -> None:
    from eventstore.domain import DeliveryLog

    slow, fast = stores
    logs = []
    for store in (slow, fast):
        log = DeliveryLog.start(batch=BATCH, file=FILE, account="acme")
        store.save(log)
        logs.append(store.get(DeliveryLog, log.id))
    a, b = logs
    rows = []
    for n, (index, status, error) in enumerate([(0, "delivered", None), (2, "failed", "unknown subscriber ü"), (0, "failed", None)]):
        at = AT + timedelta(seconds=n)
        fields = dict(message_id=UUID(int=index), msisdn=f"2783{index}", customer_id=None if index else "c0",
                      status=status, gateway="sim", gateway_id=f"g{index}", error=error, at=at.isoformat(), timestamp=at)
        recorded = a.reported(index, **fields)  # type: ignore[arg-type]
        row = dispatch_rows.reported(b, index, **fields)  # type: ignore[arg-type]
        assert recorded == (row is not None) == (n < 2)  # the second receipt of message 0 adds nothing
        if row is not None:
            rows.append(row)
    slow.save(a)
    save_progress(fast, list(b.collect_events()), {}, rows)
    assert _rows(fast) == _rows(slow) and len(_rows(slow)) == 3
    assert vars(fast.get(DeliveryLog, b.id)) == vars(slow.get(DeliveryLog, a.id))
    assert fast.get(DeliveryLog, b.id).statuses == {0: "delivered", 2: "failed"}


def test_rows_to_be_stored_by_a_store_that_takes_no_rows_are_the_same_events(
    stores: tuple[SmsStore, SmsStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # record_submissions on a store without the rows path (a compressing or encrypting one) turns
    # the dispatcher's rows-to-be into the events they stand for: the same bytes are stored.
    slow, fast = stores
    monkeypatch.setattr(SmsStore, "writes_batch_rows", property(lambda store: store is not slow))
    logs = [_started(slow), _started(fast)]
    for log, store in zip(logs, stores, strict=True):
        rows = [
            dispatch_rows.submitted(log, index=index, gateway="sim", gateway_ids=ids, parts=parts, at=AT,
                                    msisdn=msisdn, customer_id=customer)
            for index, ids, parts, msisdn, customer in SUBMISSIONS
        ]
        rows += dispatch_rows.expired_all(log, [(5, 2)], at=AT, reason="cancelled")
        log.finish()
        store.record_submissions([row for row in rows if row is not None], list(log.collect_events()))
    assert _rows(fast) == _rows(slow) and len(_rows(slow)) == 1 + len(SUBMISSIONS) + 2
    assert vars(slow.get(DispatchLog, logs[0].id)) == vars(fast.get(DispatchLog, logs[1].id))


def test_expired_parts_are_refunded_with_the_progress(stores: tuple[SmsStore, SmsStore]) -> None:
    from eventstore.domain import Account

    _, fast = stores
    fast.create_account(username="acme", password_hash="x", email=None, country="ZA", created_at=AT)
    fast.add_credits("acme", 10)
    log = _started(fast)
    rows = dispatch_rows.expired_all(log, [(0, 3), (1, 2)], at=AT, reason="cancelled")
    fast.record_submissions(rows, [], {("acme", str(FILE), "cancelled"): 5})
    assert fast.account("acme").balance == 15
    refunds = [e for e in fast.events.get(fast.account("acme").id) if isinstance(e, Account.CreditsRefunded)]
    assert [(e.file_id, e.amount, e.reason) for e in refunds] == [(str(FILE), 5, "cancelled")]
