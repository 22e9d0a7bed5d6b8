"""SmsStore commands: accounts, credits, file receipts and the 48-hour duplicate rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventstore.domain import ContactBatch, DomainError, InsufficientBalance
from eventstore.store import AccountExists, SmsStore, open_store
from tests.backends import sqlite_only

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def make_account(store: SmsStore, name: str = "acme", credits: int = 100) -> None:
    store.create_account(username=name, password_hash="x", email=None, country="ZA", created_at=NOW)
    if credits:
        store.add_credits(name, credits)


def accept(store: SmsStore, file_id, credits: int = 1) -> None:  # type: ignore[no-untyped-def]
    store.accept_file(
        file_id,
        credits=credits,
        summary=dict(
            contacts=1, messages=1, rejected=0, optouts=0, parts=credits, batches=0, sender_id="Fixed",
            not_before=None, expires_at=None, email=None, warnings=[],
        ),
    )


def test_account_cannot_be_created_twice(store: SmsStore) -> None:
    make_account(store)
    with pytest.raises(AccountExists):
        make_account(store)


def test_credits_are_added_and_reserved(store: SmsStore) -> None:
    make_account(store, credits=10)
    receipt = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s", now=NOW)
    accept(store, receipt.file_id, credits=4)
    assert store.account("acme").balance == 6


def test_reserving_more_than_the_balance_fails_and_changes_nothing(store: SmsStore) -> None:
    make_account(store, credits=3)
    receipt = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s", now=NOW)
    with pytest.raises(InsufficientBalance):
        accept(store, receipt.file_id, credits=4)
    assert store.account("acme").balance == 3
    assert store.file(receipt.file_id).status == "received"


def test_same_name_processed_within_48_hours_is_a_duplicate(store: SmsStore) -> None:
    make_account(store)
    first = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s1", now=NOW)
    accept(store, first.file_id)
    store.complete_file(first.file_id, NOW)
    again = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s2", now=NOW + timedelta(hours=47))
    assert again.duplicate_of is not None
    assert again.file_id != first.file_id


def test_same_name_after_48_hours_is_a_new_file(store: SmsStore) -> None:
    make_account(store)
    first = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s1", now=NOW)
    accept(store, first.file_id)
    store.complete_file(first.file_id, NOW)
    later = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s2", now=NOW + timedelta(hours=49))
    assert later.duplicate_of is None


def test_a_failed_file_does_not_block_its_name(store: SmsStore) -> None:
    make_account(store)
    first = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s1", now=NOW)
    store.reject_file(first.file_id, "File.Corrupt", "bad", parse=True, now=NOW)
    retry = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s2", now=NOW)
    assert retry.duplicate_of is None


def test_receipt_in_flight_is_resumed_not_duplicated(store: SmsStore) -> None:
    make_account(store)
    first = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s", now=NOW)
    again = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s", now=NOW)
    assert again.resumed and again.file_id == first.file_id


def test_other_bytes_under_an_in_flight_name_are_a_duplicate(store: SmsStore) -> None:
    make_account(store)
    store.receive_file(account="acme", name="a.json", size=1, fingerprint="s", now=NOW)
    other = store.receive_file(account="acme", name="a.json", size=1, fingerprint="t", now=NOW)
    assert other.duplicate_of is not None


def test_file_ids_are_deterministic_across_stores(tmp_path: Path) -> None:
    ids = []
    for name in ("one", "two"):
        app = open_store(tmp_path / name)
        make_account(app)
        ids.append(app.receive_file(account="acme", name="a.json", size=1, fingerprint="s", now=NOW).file_id)
        app.close()
    assert ids[0] == ids[1]


def test_saving_a_stored_batch_again_queues_nothing_twice(store: SmsStore) -> None:
    make_account(store)
    receipt = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s", now=NOW)

    def batch(number: int) -> ContactBatch:
        b = ContactBatch.open(
            file=receipt.file_id, account="acme", number=number, sender_id="Fixed",
            not_before=None, expires_at=None, timestamp=NOW,
        )
        b.queue(number, "27831234567", None, "hi", 1)
        b.seal()
        return b

    assert store.save_batches([batch(0)]) == 1
    assert store.save_batches([batch(0), batch(1)]) == 1
    queued = [
        n for n in store.notifications(0, 1000) if n.topic.endswith("MessageQueued")
    ]
    assert len(queued) == 2


def test_a_concurrent_writer_does_not_lose_credits(tmp_path: Path) -> None:
    server = open_store(tmp_path)
    admin = open_store(tmp_path)
    make_account(server, credits=0)
    for _ in range(5):
        server.add_credits("acme", 1)
        admin.add_credits("acme", 10)
    assert server.account("acme").balance == 55
    server.close()
    admin.close()


def test_an_account_restored_from_a_snapshot_is_whole(store: SmsStore) -> None:
    make_account(store, credits=0)
    for _ in range(150):  # past the snapshot interval
        store.add_credits("acme", 2)
    account = store.account("acme")
    assert store.snapshots is not None and list(store.snapshots.get(account.id))
    assert account.balance == 300 and account.version == 151
    assert isinstance(account.created_on, datetime) and isinstance(account.modified_on, datetime)


def test_an_accepted_file_cannot_be_rejected(store: SmsStore) -> None:
    make_account(store)
    receipt = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s", now=NOW)
    accept(store, receipt.file_id)
    with pytest.raises(DomainError):
        store.reject_file(receipt.file_id, "InsufficientCredits", "x", parse=False, now=NOW)
    assert store.file(receipt.file_id).status == "accepted"


@sqlite_only  # compares SQLite's own recorder with the plain one
def test_changes_name_the_changed_aggregates_the_same_on_both_recorders(tmp_path: Path) -> None:
    # `changes` reads light rows on our SQLite recorder and falls back to notifications on any
    # other (eventsourcing's own recorder here): both give the same answer.
    from uuid import UUID

    from eventsourcing.utils import get_topic

    from eventstore.domain import DispatchLog
    from eventstore.store import store_env

    fast = open_store(tmp_path / "fast")
    env = store_env(tmp_path / "slow")
    del env["APPLICATION_RECORDER_TOPIC"]
    (tmp_path / "slow").mkdir()
    slow = SmsStore(env=env)
    assert fast.writes_batch_rows and not slow.writes_batch_rows
    started, submitted = get_topic(DispatchLog.DispatchStarted), get_topic(DispatchLog.MessageSubmitted)
    answers = []
    for store in (fast, slow):
        make_account(store)
        log = DispatchLog.start(batch=UUID(int=1), file=UUID(int=2), account="acme")
        log.submitted(0, "sim", ["g0"], 1, "2026-12-02T10:00:00+00:00", msisdn="1", customer_id=None)
        log.submitted(1, "sim", ["g1"], 1, "2026-12-02T10:00:01+00:00", msisdn="2", customer_id=None)
        store.save(log)
        answers.append((log.id.hex, store.changes(0, 100, [started, submitted], [started]), store.changes(0, 2, [submitted])))
    (log_id, changes, limited), (_, slow_changes, slow_limited) = answers
    assert (changes.count, changes.originators) == (3, [log_id])
    ((originator, topic, state),) = changes.states
    assert (originator, topic) == (log_id, started)
    assert state["file_id"] == str(UUID(int=2)) and state["account"] == "acme"
    assert (limited.count, limited.originators, limited.states) == (2, [log_id], [])
    assert limited.position == changes.position
    assert slow_changes.position > 0 and (slow_changes.count, slow_changes.originators) == (3, [log_id])
    assert {k: v for k, v in slow_changes.states[0][2].items() if k != "timestamp"} == {
        k: v for k, v in state.items() if k != "timestamp"
    }
    assert (slow_limited.count, slow_limited.position) == (2, slow_changes.position)
    assert fast.changes(changes.position, 100, [started, submitted]).count == 0
    fast.close()
    slow.close()
