"""The message-level history follows the log: queued, submitted, final status, refund, replies;
queries by number, customerId, file, account, time and status, paged by a cursor; a rebuild gives
identical content; and `sftpsms history` prints it in any format, streaming."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from eventstore.domain import ContactBatch, DeliveryLog, message_id
from eventstore.history import History, HistoryError, HistoryQuery, table_digests
from eventstore.store import SmsStore
from sftpsms.cli import main
from tests.backends import sqlite_only

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def send_file(
    store: SmsStore,
    name: str,
    numbers: list[tuple[str, str | None]],
    *,
    account: str = "acme",
    at: datetime = NOW,
    sender_id: str = "Acme",
) -> UUID:
    """A file accepted, queued in one batch and submitted, through the store's own commands."""
    receipt = store.receive_file(account=account, name=name, size=1, fingerprint=name, now=at)
    parts = len(numbers)
    store.accept_file(
        receipt.file_id,
        credits=parts,
        summary={
            "contacts": len(numbers), "messages": len(numbers), "rejected": 0, "optouts": 0, "parts": parts,
            "batches": 1, "sender_id": sender_id, "not_before": None, "expires_at": None, "email": None,
            "warnings": [],
        },
    )
    batch = ContactBatch.open(
        file=receipt.file_id, account=account, number=0, sender_id=sender_id, not_before=None,
        expires_at=None, timestamp=at,
    )
    for index, (msisdn, customer) in enumerate(numbers):
        batch.queue(index, msisdn, customer, f"hello {index}", 1)
    batch.seal()
    store.save_batches([batch])
    store.complete_file(receipt.file_id, at)
    return receipt.file_id


def submit(store: SmsStore, file: UUID, indexes: list[int], at: datetime) -> None:
    queued = store.queued_batch(store.batch(_batch_of(file)).id)
    log = store.dispatch_log(queued)
    for message in queued.messages:
        if message.index in indexes:
            log.submitted(
                message.index, "simulator", [f"gw-{file.hex[:6]}-{message.index}"], 1, at.isoformat(),
                msisdn=message.msisdn, customer_id=message.customer_id,
            )
    store.record_dispatch(log)


def expire(store: SmsStore, file: UUID, index: int, at: datetime) -> None:
    queued = store.queued_batch(_batch_of(file))
    log = store.dispatch_log(queued)
    log.expired(index, 1, at.isoformat())
    store.record_dispatch(log)


def report(store: SmsStore, file: UUID, index: int, status: str, at: datetime, reply: str | None = None) -> None:
    from eventsourcing.application import AggregateNotFoundError

    from eventstore.domain import delivery_log_id

    batch = _batch_of(file)
    queued = store.queued_batch(batch)
    message = next(m for m in queued.messages if m.index == index)
    try:
        log = store.get(DeliveryLog, delivery_log_id(batch))
    except AggregateNotFoundError:
        log = DeliveryLog.start(batch=batch, file=file, account=queued.account)
    common = {"message_id": message_id(file, index), "msisdn": message.msisdn, "customer_id": message.customer_id}
    if reply is None:
        log.reported(
            index, **common, status=status, gateway="simulator", gateway_id=f"gw-{index}",
            error=None if status == "delivered" else "Undeliverable", at=at.isoformat(),
        )
    else:
        log.replied(
            index, **common, text=reply, gateway="simulator", reply_id=f"r-{index}-{reply}",
            opt_out=reply == "STOP", at=at.isoformat(),
        )
    store.save(log)


def _batch_of(file: UUID) -> UUID:
    from eventstore.domain import batch_id

    return batch_id(file, 0)


@pytest.fixture
def populated(store: SmsStore) -> dict[str, UUID]:
    store.create_account(username="acme", password_hash="x", email=None, country="ZA", created_at=NOW)
    store.create_account(username="other", password_hash="x", email=None, country="ZA", created_at=NOW)
    store.add_credits("acme", 100)
    store.add_credits("other", 100)
    first = send_file(store, "a.json", [("27831110000", "C1"), ("27831110001", "C2"), ("27831110002", None)])
    submit(store, first, [0, 1], NOW + timedelta(seconds=1))
    report(store, first, 0, "delivered", NOW + timedelta(seconds=5))
    report(store, first, 1, "failed", NOW + timedelta(seconds=6))
    report(store, first, 0, "", NOW + timedelta(minutes=1), reply="Thanks")
    report(store, first, 0, "", NOW + timedelta(minutes=2), reply="STOP")
    expire(store, first, 2, NOW + timedelta(hours=1))
    later = NOW + timedelta(days=3)
    second = send_file(store, "b.json", [("27831110000", "C1")], at=later)
    third = send_file(store, "a.json", [("27831110000", "X9")], account="other", at=later)
    return {"first": first, "second": second, "third": third}


def test_a_message_carries_its_whole_life(store: SmsStore, tmp_path: Path, populated: dict[str, UUID]) -> None:
    history = History(tmp_path / "history.db")
    history.catch_up(store)
    messages = history.page(HistoryQuery(file_id=str(populated["first"])))["messages"]
    assert [(m["index"], m["status"]) for m in messages] == [(0, "delivered"), (1, "failed"), (2, "expired")]
    delivered, failed, expired = messages
    assert delivered["message_id"] == str(message_id(populated["first"], 0))
    assert (delivered["account"], delivered["file"], delivered["msisdn"], delivered["customer_id"]) == (
        "acme", "a.json", "27831110000", "C1"
    )
    assert (delivered["text"], delivered["parts"], delivered["sender_id"]) == ("hello 0", 1, "Acme")
    assert delivered["queued_at"] == NOW.isoformat()
    assert delivered["submitted_at"] == (NOW + timedelta(seconds=1)).isoformat()
    assert delivered["final_at"] == (NOW + timedelta(seconds=5)).isoformat()
    assert delivered["gateway"] == "simulator"
    assert delivered["gateway_id"] == f"gw-{populated['first'].hex[:6]}-0"
    assert [(r["text"], r["opt_out"]) for r in delivered["replies"]] == [("Thanks", False), ("STOP", True)]
    assert (failed["error"], failed["replies"]) == ("Undeliverable", [])
    assert (expired["submitted_at"], expired["refunded"], expired["final_at"]) == (
        None, 1, (NOW + timedelta(hours=1)).isoformat()
    )


def test_queries_by_number_customer_account_time_and_status(
    store: SmsStore, tmp_path: Path, populated: dict[str, UUID]
) -> None:
    history = History(tmp_path / "history.db")
    history.catch_up(store)

    def files(**query: str) -> list[tuple[str, str, int]]:
        return [(m["account"], m["file"], m["index"]) for m in history.iter_messages(HistoryQuery(**query))]

    assert files(msisdn="27831110000") == [("acme", "a.json", 0), ("acme", "b.json", 0), ("other", "a.json", 0)]
    assert files(msisdn="27831110000", account="other") == [("other", "a.json", 0)]
    assert files(customer_id="C1") == [("acme", "a.json", 0), ("acme", "b.json", 0)]
    assert files(account="acme", status="failed") == [("acme", "a.json", 1)]
    since = (NOW + timedelta(days=1)).isoformat()
    assert files(account="acme", since=since) == [("acme", "b.json", 0)]
    assert files(account="acme", until=since) == [("acme", "a.json", 0), ("acme", "a.json", 1), ("acme", "a.json", 2)]
    assert files(msisdn="27000000000") == []


def test_pages_follow_the_cursor_without_repeats(store: SmsStore, tmp_path: Path) -> None:
    store.create_account(username="acme", password_hash="x", email=None, country="ZA", created_at=NOW)
    store.add_credits("acme", 100)
    file = send_file(store, "big.json", [(f"2783111{i:04d}", f"C{i % 3}") for i in range(25)])
    history = History(tmp_path / "history.db")
    history.catch_up(store)
    for query in (HistoryQuery(file_id=str(file)), HistoryQuery(account="acme"), HistoryQuery(customer_id="C1")):
        seen, cursor = [], None
        while True:
            page = history.page(query, limit=4, cursor=cursor)
            assert len(page["messages"]) <= 4
            seen += [m["index"] for m in page["messages"]]
            cursor = page["next"]
            if cursor is None:
                break
        assert seen == [m["index"] for m in history.iter_messages(query, page_size=1000)]
        assert len(seen) == len(set(seen)) == (25 if query.customer_id is None else 8)


def test_bad_cursor_status_and_page_size_are_refused(store: SmsStore, tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    with pytest.raises(HistoryError, match="cursor"):
        history.page(HistoryQuery(account="acme"), cursor="not-a-cursor!")
    with pytest.raises(HistoryError, match="status"):
        history.page(HistoryQuery(account="acme", status="lost"))
    with pytest.raises(HistoryError, match="page"):
        history.page(HistoryQuery(account="acme"), limit=0)
    with pytest.raises(HistoryError, match="number"):
        history.page(HistoryQuery())


def test_sql_and_general_paths_in_any_steps_and_a_rebuild_give_identical_content(
    store: SmsStore, tmp_path: Path, populated: dict[str, UUID]
) -> None:
    import eventstore.history as module

    whole = History(tmp_path / "whole.db")
    whole.catch_up(store)  # the SQL path over the attached events file, in one window
    expected = table_digests(whole.conn)
    assert expected["messages"][0] == 5 and expected["outcomes"][0] == 3 and expected["replies"][0] == 2
    original = module.READ_BATCH, module.SQL_WINDOW
    module.READ_BATCH = module.SQL_WINDOW = 3  # pages end in the middle of every kind of event
    try:
        for name, sql in (("general", False), ("sql", True)):
            stepped = History(tmp_path / f"{name}.db")
            position, done = stepped.catch_up(store, max_pages=1, sql=sql)
            assert not done
            assert stepped.position() == position
            assert stepped.catch_up(store, sql=sql)[1]
            assert table_digests(stepped.conn) == expected, name
    finally:
        module.READ_BATCH, module.SQL_WINDOW = original
    whole.rebuild(store)
    assert table_digests(whole.conn) == expected


@sqlite_only  # the indexes are deferred by the SQL path only, which reads SQLite's events file
def test_a_catch_up_far_behind_builds_the_message_indexes_once_at_the_end(
    store: SmsStore, tmp_path: Path, populated: dict[str, UUID]
) -> None:
    import eventstore.history as module

    indexed = History(tmp_path / "indexed.db")
    indexed.catch_up(store)  # a few hundred positions: under DEFER_LAG, the indexes stay up
    expected = table_digests(indexed.conn)
    names = set(module.MESSAGE_INDEXES)

    def indexes(history: History) -> set[str]:
        rows = history.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
        return {row[0] for row in rows} & names

    assert indexes(indexed) == names
    original = module.DEFER_LAG, module.SQL_WINDOW
    module.DEFER_LAG, module.SQL_WINDOW = 10, 5  # "far behind" is now ten positions
    try:
        deferred = History(tmp_path / "deferred.db")
        position, done = deferred.catch_up(store, max_pages=1)
        while deferred.conn.execute("SELECT count(*) FROM messages").fetchone()[0] < 2:
            position, done = deferred.catch_up(store, max_pages=1)  # until a few messages are in
        assert not done and 0 < position < store.last_position()
        assert indexes(deferred) == set()  # dropped for the catch-up ...
        number = indexed.page(HistoryQuery(msisdn="27831110000"))["messages"]
        partial = deferred.page(HistoryQuery(msisdn="27831110000"))["messages"]
        assert partial and [m["message_id"] for m in partial] == [m["message_id"] for m in number][: len(partial)]
        assert deferred.page(HistoryQuery(account="acme"), limit=2)["messages"]  # ... queries still answered
        reopened = History(tmp_path / "deferred.db")  # another process finishes the catch-up
        assert reopened.catch_up(store)[1]
        assert indexes(reopened) == names  # built once the log's end is reached
        assert table_digests(reopened.conn) == expected
        assert reopened.page(HistoryQuery(msisdn="27831110000"))["messages"] == number
        # Not deferred when the history already holds more than the lag's worth of messages.
        module.DEFER_LAG = 1
        assert reopened.catch_up(store)[1] and indexes(reopened) == names
    finally:
        module.DEFER_LAG, module.SQL_WINDOW = original


def test_an_older_history_gets_todays_indexes_when_opened(tmp_path: Path) -> None:
    import eventstore.history as module

    path = tmp_path / "old.db"
    History(path).close()
    old = sqlite3.connect(path)
    old.execute("DROP INDEX messages_msisdn")
    old.execute("CREATE INDEX messages_msisdn ON messages (msisdn, queued_at)")  # an earlier definition
    old.execute("DROP INDEX replies_account")  # not there before
    old.commit()
    old.close()
    History(path).close()
    check = sqlite3.connect(path)
    found = dict(check.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    assert found["messages_msisdn"] == f"CREATE INDEX messages_msisdn {module.MESSAGE_INDEXES['messages_msisdn']}"
    assert found["replies_account"] == "CREATE INDEX replies_account ON replies (account, id)"
    check.close()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_history_prints_json_csv_and_table(
    store: SmsStore, tmp_path: Path, populated: dict[str, UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    code, out, _ = run_cli(capsys, "history", "--msisdn", "083 111 0000", "--account", "acme", "--format", "json", *data)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["file"], r["status"]) for r in rows] == [("a.json", "delivered"), ("b.json", "queued")]
    assert [r["text"] for r in rows[0]["replies"]] == ["Thanks", "STOP"]
    code, out, _ = run_cli(capsys, "history", "--msisdn", "+27 83 111 0000", "--format", "csv", *data)
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["account"] for r in table] == ["acme", "acme", "other"]
    assert table[0]["replies"] == "Thanks | STOP (opt-out)"
    code, out, _ = run_cli(capsys, "history", "--file", "a.json", "--account", "acme", "--status", "expired", *data)
    assert code == 0
    assert "expired" in out and "27831110002" in out and "delivered" not in out
    code, out, _ = run_cli(capsys, "history", "--customer-id", "C1", "--since", "2026-11-26", "--json", *data)
    assert [json.loads(line)["file"] for line in out.splitlines()] == ["b.json"]


def test_cli_history_refuses_bad_input_without_traceback(
    store: SmsStore, tmp_path: Path, populated: dict[str, UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    for argv, message in (
        (["--msisdn", "hello"], "not a phone number"),
        (["--file", "a.json"], "several accounts"),
        (["--file", "nope.json"], "no file"),
        (["--account", "acme", "--since", "yesterday"], "--since"),
        (["--account", "acme", "--status", "lost"], "status"),
        (["--account", "nobody"], "no account"),
    ):
        code, out, err = run_cli(capsys, "history", *argv, *data)
        assert code == 2, argv
        assert message in err, (argv, err)
        assert "Traceback" not in err


async def test_the_projector_follows_the_history_only_while_no_file_is_being_ingested(
    store: SmsStore, tmp_path: Path, populated: dict[str, UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio

    from actors import projector as module
    from actors.projector import Projector

    monkeypatch.setattr(module, "HISTORY_INTERVAL", 0.01)
    monkeypatch.setattr(module, "HISTORY_DEFER_MAX", 1.0)
    projector = Projector(store, tmp_path / "readmodels.db", tmp_path / "history.db")
    history = History(tmp_path / "history.db")

    async def caught_up(within: float) -> bool:
        with trio.move_on_after(within):
            while history.position() < store.last_position():  # noqa: ASYNC110 - a position in another database
                await trio.sleep(0.01)
            return True
        return False

    async with trio.open_nursery() as nursery:
        await nursery.start(projector.run)
        assert await caught_up(5)
        # A file arrives and stays open (being ingested): what comes meanwhile waits.
        open_file = store.receive_file(account="acme", name="busy.json", size=1, fingerprint="x", now=NOW)
        await projector.catch_up()
        send_file(store, "c.json", [("27831119999", None)])
        assert not await caught_up(0.5)
        assert await caught_up(5)  # ... but not longer than HISTORY_DEFER_MAX
        store.reject_file(open_file.file_id, "File.Corrupt", "not JSON", parse=True, now=NOW)
        nursery.cancel_scope.cancel()
    assert [m["file"] for m in history.iter_messages(HistoryQuery(msisdn="27831119999"))] == ["c.json"]
