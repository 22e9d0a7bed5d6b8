"""Quiet hours in the recipient's local time, through the dispatcher: a file across the US time
zones, sent at a UTC time that is night in some of them (virtual time: autojump_clock, and the
dispatcher's wall clock follows it). Every submission is checked against the recipient's local
time; held messages go when their window opens; those End overtakes expire with their refund.

The store, the writer, the projector and the read models are real (as in test_dispatcher.py);
the gateway records what it was given and when.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import pytest
import trio
import trio.testing

import actors.dispatcher as dispatcher_module
from actors.delivery_csv import delivery_rows
from actors.dispatcher import Dispatcher
from actors.gateway import GatewayReport
from actors.projector import Projector
from actors.submissions import RecentSubmissions
from actors.writer import open_store_channel, run_writer
from eventstore.domain import (
    NAMESPACE,
    Account,
    ContactBatch,
    DispatchLog,
    account_id,
    dispatch_log_id,
)
from eventstore.projections import ReadModels
from eventstore.store import SmsStore, open_store
from sftpsms.config import Settings
from sftpsms.quiet import QuietHours, quiet_in_zone, zone_infos, zones_for_number
from tests.test_dispatcher import RecordingGateway, make_account

NIGHT = QuietHours.parse("21:00-08:00")
# One number per US zone: New York, Chicago, Denver, Los Angeles, Alaska (Anchorage and Adak), Hawaii.
AREAS = {"ny": "1212", "chicago": "1312", "denver": "1303", "la": "1213", "alaska": "1907", "hawaii": "1808"}
# Monday 2026-12-07 13:59 UTC: 08:59 in New York (open), 07:59 in Chicago (opens in a minute),
# 06:59 in Denver, 05:59 in Los Angeles, 04:59 / 03:59 in Alaska, 03:59 in Hawaii.
MORNING = datetime(2026, 12, 7, 13, 59, tzinfo=UTC)


def numbers(area: str, count: int) -> list[str]:
    return [f"{AREAS[area]}555{index:04d}" for index in range(count)]


def queue(store: SmsStore, account: str, name: str, msisdns: list[str], *, end: datetime | None, batch_size: int = 1000) -> UUID:
    """Sealed contact batches, as pass 2 leaves them (End = the batches' expires_at)."""
    file = uuid5(NAMESPACE, f"test-file:{account}:{name}")
    batches = []
    for number, start in enumerate(range(0, len(msisdns), batch_size)):
        batch = ContactBatch.open(
            file=file, account=account, number=number, sender_id="Acme", not_before=None,
            expires_at=end.isoformat() if end else None, timestamp=MORNING,
        )
        for index in range(start, min(len(msisdns), start + batch_size)):
            batch.queue(index, msisdns[index], f"c{index}", "hello", 1)
        batch.seal()
        batches.append(batch)
    store.save(*batches)
    return file


@dataclass
class Service:
    store: SmsStore
    dispatcher: Dispatcher
    gateway: RecordingGateway
    projector: Projector
    clock: Callable[[], datetime]


@asynccontextmanager
async def dispatching(tmp_path: Path, start: datetime, **overrides: object) -> AsyncIterator[Service]:
    """The dispatcher with its wall clock at `start` + the virtual seconds elapsed."""
    settings = replace(Settings(data_dir=tmp_path), **overrides)  # type: ignore[arg-type]
    store = open_store(tmp_path)
    gateway = RecordingGateway("simulator")
    origin = trio.current_time()

    def clock() -> datetime:
        return start + timedelta(seconds=trio.current_time() - origin)

    try:
        projector = Projector(store, settings.readmodels_db)
        async with trio.open_nursery() as nursery:
            client, inbox = open_store_channel()
            await nursery.start(partial(run_writer, inbox, store=store, on_written=projector.poke))
            await nursery.start(projector.run)
            reports_send, _reports_receive = trio.open_memory_channel[GatewayReport](10_000)
            dispatcher = Dispatcher(
                store=client.clone(), gateways={"simulator": gateway}, settings=settings, recent=RecentSubmissions(),
                reports=reports_send, reader=store, clock=clock,
            )
            await nursery.start(dispatcher.run)
            yield Service(store, dispatcher, gateway, projector, clock)
            await dispatcher.flush()
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def wait_until(predicate: Callable[[], bool], every: float = 1.0) -> None:
    """Look every `every` virtual seconds (the windows here are minutes apart; looking at the
    store more often would make virtual time crawl), for at most a minute of real time."""
    deadline = time.monotonic() + 60
    while not predicate():  # noqa: ASYNC110
        assert time.monotonic() < deadline, "not reached within a minute"
        await trio.sleep(every)


def events_of(store: SmsStore, file: UUID, kind: type[Any]) -> list[Any]:
    found = []
    for number in range(10):
        found += [e for e in store.events.get(dispatch_log_id(uuid5(file, f"batch:{number}"))) if isinstance(e, kind)]
    return found


def refunded(store: SmsStore, account: str) -> int:
    return sum(e.amount for e in store.events.get(account_id(account)) if isinstance(e, Account.CreditsRefunded))


def quiet_counts(store: SmsStore, data_dir: Path, file: UUID) -> tuple[int, int] | None:
    models = ReadModels(Settings(data_dir=data_dir).readmodels_db)  # the dispatching() harness's
    try:
        models.catch_up(store)
        return models.quiet_counts([str(file)]).get(str(file))
    finally:
        models.close()


def assert_outside_quiet_hours(hours: QuietHours, msisdn: str, at: datetime) -> None:
    for zone in zone_infos(zones_for_number(msisdn, "US")):
        local = at.astimezone(zone)
        assert not quiet_in_zone(hours, zone, at), f"{msisdn} submitted at {local:%a %H:%M:%S} {zone}"


async def test_every_submission_is_outside_the_recipients_quiet_hours(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    contacts = [n for area in AREAS for n in numbers(area, 5)]
    end = MORNING + timedelta(minutes=10)  # 14:09 UTC: Chicago's window has opened, Denver's not
    origin = trio.current_time()
    async with dispatching(tmp_path, MORNING) as s:
        make_account(s.store, "acme")
        s.store.set_quiet_hours("acme", NIGHT.window, NIGHT.day_names)
        file = queue(s.store, "acme", "us.json", contacts, end=end)
        s.projector.poke()
        await wait_until(lambda: len(events_of(s.store, file, DispatchLog.BatchDispatched)) == 1)
        submitted = events_of(s.store, file, DispatchLog.MessageSubmitted)
        expired = events_of(s.store, file, DispatchLog.MessageExpired)
        held = {i for e in events_of(s.store, file, DispatchLog.MessagesHeld) for i in e.indexes}
        # Every submission, as recorded and as the gateway saw it, outside 21:00-08:00 locally.
        for event in submitted:
            assert_outside_quiet_hours(NIGHT, event.msisdn, datetime.fromisoformat(event.submitted_at))
        for at_clock, message in s.gateway.sent:
            assert_outside_quiet_hours(NIGHT, message.msisdn, MORNING + timedelta(seconds=at_clock - origin))
        sent_to = sorted(event.msisdn for event in submitted)
        assert sent_to == sorted(numbers("ny", 5) + numbers("chicago", 5))
        # New York at once, Chicago when its window opened (08:00 CST = 14:00 UTC).
        for event in submitted:
            at = datetime.fromisoformat(event.submitted_at)
            if event.msisdn.startswith("1312"):
                assert MORNING + timedelta(minutes=1) <= at < MORNING + timedelta(minutes=1, seconds=5)
            else:
                assert at < MORNING + timedelta(minutes=1)
        # Chicago and the four still-dark zones were held; the dark ones expired at End, refunded.
        assert held == {i for i, n in enumerate(contacts) if not n.startswith("1212")}
        assert sorted(contacts[e.index] for e in expired) == sorted(
            n for area in ("denver", "la", "alaska", "hawaii") for n in numbers(area, 5)
        )
        assert all(datetime.fromisoformat(e.at) >= end for e in expired)
        await wait_until(lambda: refunded(s.store, "acme") == 20)
        # The files read model counts them: 25 held, 20 of them expired.
        await wait_until(lambda: quiet_counts(s.store, tmp_path, file) == (25, 20))
    # The delivery CSV says which were held, and that those expired.
    store = open_store(tmp_path)
    try:
        rows, _ = delivery_rows(store, file, batches=1)
    finally:
        store.close()
    by_number = {row["msisdn"]: row for row in rows}
    assert {row["held"] for n, row in by_number.items() if n.startswith("1212")} == {""}
    assert {(row["held"], row["status"]) for n, row in by_number.items() if n.startswith("1312")} == {
        ("quiet_hours", "submitted")
    }
    assert {(row["held"], row["status"]) for n, row in by_number.items() if n[:4] in ("1303", "1213", "1907", "1808")} == {
        ("quiet_hours", "expired")
    }



# Monday 2026-12-07 20:59:30 in New York (01:59:30 UTC on Tuesday): half a minute before 21:00.
EVENING = datetime(2026, 12, 8, 1, 59, 30, tzinfo=UTC)


async def test_messages_still_queued_when_the_window_starts_are_held_and_expire_at_end(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    contacts = numbers("ny", 120)
    end = EVENING + timedelta(minutes=5)
    async with dispatching(tmp_path, EVENING, account_rate=2.0) as s:  # 2 a second: 120 need a minute
        make_account(s.store, "acme")
        s.store.set_quiet_hours("acme", NIGHT.window, NIGHT.day_names)
        file = queue(s.store, "acme", "evening.json", contacts, end=end)
        s.projector.poke()
        await wait_until(lambda: len(events_of(s.store, file, DispatchLog.BatchDispatched)) == 1)
        submitted = events_of(s.store, file, DispatchLog.MessageSubmitted)
        expired = events_of(s.store, file, DispatchLog.MessageExpired)
        held = {i for e in events_of(s.store, file, DispatchLog.MessagesHeld) for i in e.indexes}
        await wait_until(lambda: refunded(s.store, "acme") == len(expired))
    assert 0 < len(submitted) < 120
    for event in submitted:
        assert datetime.fromisoformat(event.submitted_at) < datetime(2026, 12, 8, 2, 0, tzinfo=UTC)
        assert_outside_quiet_hours(NIGHT, event.msisdn, datetime.fromisoformat(event.submitted_at))
    assert len(submitted) + len(expired) == 120
    assert held == {e.index for e in expired}  # every one not sent was held at 21:00, then expired


async def test_held_numbers_do_not_hold_back_open_ones_of_the_same_file_or_other_accounts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # 2 500 Los Angeles numbers (05:59 there) first, then 500 New York ones (08:59): three batches;
    # and another account's file, without quiet hours, of Los Angeles numbers.
    contacts = numbers("la", 2500) + numbers("ny", 500)
    async with dispatching(tmp_path, MORNING, send_rate=1000.0, account_rate=1000.0) as s:
        for name in ("acme", "other"):
            make_account(s.store, name)
        s.store.set_quiet_hours("acme", NIGHT.window, NIGHT.day_names)
        file = queue(s.store, "acme", "mixed.json", contacts, end=MORNING + timedelta(hours=6))
        queue(s.store, "other", "la.json", numbers("la", 50), end=None)
        s.projector.poke()
        await wait_until(lambda: len(s.gateway.sent) >= 550, every=0.1)
        sent_at = s.clock()
        # Every batch of the file is parked out of memory: only its row and wake-up time remain.
        files = s.dispatcher.accounts["acme"].files
        await wait_until(lambda: len(files[str(file)].parked) == 3 and files[str(file)].active is None, every=0.1)
        parked = files[str(file)].parked
        assert {wake for wake, _ in parked} == {datetime(2026, 12, 7, 16, 0, tzinfo=UTC)}  # 08:00 in LA
        await s.dispatcher.flush()
        held = {i for e in events_of(s.store, file, DispatchLog.MessagesHeld) for i in e.indexes}
    assert sent_at < datetime(2026, 12, 7, 16, 0, tzinfo=UTC)  # they did not wait for Los Angeles' 08:00
    by_account: dict[str, list[str]] = {"acme": [], "other": []}
    for _, message in s.gateway.sent:
        by_account[message.account].append(message.msisdn)
    assert sorted(by_account["acme"]) == numbers("ny", 500)
    assert len(by_account["other"]) == 50  # Los Angeles at 05:59, but this account has no quiet hours
    assert held == set(range(2500))


async def test_quiet_hours_are_off_by_default(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    contacts = [n for area in AREAS for n in numbers(area, 5)]
    async with dispatching(tmp_path, MORNING) as s:
        make_account(s.store, "acme")
        file = queue(s.store, "acme", "us.json", contacts, end=MORNING + timedelta(minutes=10))
        s.projector.poke()
        await wait_until(lambda: len(events_of(s.store, file, DispatchLog.BatchDispatched)) == 1)
        submitted = events_of(s.store, file, DispatchLog.MessageSubmitted)
        assert not events_of(s.store, file, DispatchLog.MessagesHeld)
    assert sorted(e.msisdn for e in submitted) == sorted(contacts)
    assert all(datetime.fromisoformat(e.submitted_at) < MORNING + timedelta(minutes=1) for e in submitted)


async def test_turning_quiet_hours_off_releases_held_messages(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with dispatching(tmp_path, MORNING) as s:
        make_account(s.store, "acme")
        s.store.set_quiet_hours("acme", NIGHT.window, NIGHT.day_names)
        file = queue(s.store, "acme", "la.json", numbers("la", 10), end=MORNING + timedelta(hours=3))
        s.projector.poke()
        await wait_until(lambda: len(events_of(s.store, file, DispatchLog.MessagesHeld)) == 1)
        assert not s.gateway.sent
        s.store.set_quiet_hours("acme", None)
        s.projector.poke()
        await wait_until(lambda: len(s.gateway.sent) == 10)
        assert s.clock() < MORNING + timedelta(minutes=5)


async def test_a_restart_while_messages_are_held_sends_each_once_when_the_window_opens(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    contacts = numbers("ny", 5) + numbers("chicago", 5)
    file: UUID | None = None
    async with dispatching(tmp_path, MORNING) as first:
        make_account(first.store, "acme")
        first.store.set_quiet_hours("acme", NIGHT.window, NIGHT.day_names)
        file = queue(first.store, "acme", "us.json", contacts, end=MORNING + timedelta(minutes=30))
        first.projector.poke()
        await wait_until(lambda: len(events_of(first.store, file, DispatchLog.MessagesHeld)) == 1, every=0.1)
        await wait_until(lambda: len(events_of(first.store, file, DispatchLog.MessageSubmitted)) == 5, every=0.1)
        stopped_at = first.clock()
    assert stopped_at < MORNING + timedelta(minutes=1)  # before Chicago's 08:00
    assert sorted(m.msisdn for _, m in first.gateway.sent) == numbers("ny", 5)
    # The service comes back (a new dispatcher on the same store) while Chicago is still quiet.
    async with dispatching(tmp_path, stopped_at) as second:
        await wait_until(lambda: len(events_of(second.store, file, DispatchLog.BatchDispatched)) == 1)
        submitted = events_of(second.store, file, DispatchLog.MessageSubmitted)
        held = events_of(second.store, file, DispatchLog.MessagesHeld)
    assert sorted(m.msisdn for _, m in second.gateway.sent) == numbers("chicago", 5)  # none again
    assert sorted(e.msisdn for e in submitted) == sorted(contacts)
    assert len(held) == 1  # held again after the restart, recorded once
    for event in submitted:
        assert_outside_quiet_hours(NIGHT, event.msisdn, datetime.fromisoformat(event.submitted_at))


# ---- through the real service: the command, an SFTP upload, the delivery CSV --------------------


def test_the_command_sets_quiet_hours_that_the_service_keeps_through_sftp(tmp_path: Path) -> None:
    """`sftpsms account quiet-hours` on a running service, with a window around New York's
    present local time (Los Angeles, three hours behind, is outside it): the New York numbers of
    an upload are held, the Los Angeles ones sent, and the delivery CSV says so."""
    import csv
    import json

    from tests.service import running_service
    from tests.test_e2e import send, v7

    now = datetime.now(UTC).astimezone(zone_infos(("America/New_York",))[0])
    start, stop = now - timedelta(hours=2), now + timedelta(hours=2)
    window = f"{start:%H:%M}-{stop:%H:%M}"
    with running_service(tmp_path / "data") as service:
        service.add_account("acme", country="US")
        done = service.cli("account", "quiet-hours", "acme", window, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["quiet_hours"]["window"] == window
        shown = json.loads(service.cli("account", "show", "acme", "--json").stdout)
        assert shown["quiet_hours"] == {"window": window, "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
        assert service.cli("account", "quiet-hours", "acme", "21:00").returncode == 2  # not a window
        contacts = [{"msisdn": f"+1{n}"} for n in ("2125550101", "2125550102", "2135550101", "2135550102")]
        folder, report = send(service, "acme", "us.json", v7(Message_Template="hello", Contacts=contacts))
        assert folder == "Processed", report
        path = service.folder("acme", "Processed") / "us.json.delivery.csv"
        deadline = time.monotonic() + 40
        rows: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            if path.exists():
                rows = list(csv.DictReader(path.read_text().splitlines()))
                statuses = {r["msisdn"][:4]: r["status"] for r in rows}
                if statuses.get("1212") == "held" and statuses.get("1213") in ("delivered", "failed", "expired"):
                    break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no delivery CSV with held New York numbers: {rows}")
        assert {(r["msisdn"][:4], r["held"]) for r in rows} == {("1212", "quiet_hours"), ("1213", "")}
        assert {r["status"] for r in rows if r["msisdn"].startswith("1212")} == {"held"}
        assert all(r["submitted_at"] for r in rows if r["msisdn"].startswith("1213"))
        events = service.cli("events", "--account", "acme", "--file", "us.json", "--json")
        assert "MessagesHeld" in events.stdout, events.stdout[-2000:]
        [listed] = json.loads(service.cli("files", "--account", "acme", "--json").stdout)
        assert (listed["quiet_held"], listed["quiet_expired"]) == (2, 0)
        assert service.cli("account", "quiet-hours", "acme", "off").returncode == 0
        shown = json.loads(service.cli("account", "show", "acme", "--json").stdout)
        assert shown["quiet_hours"] is None


async def test_parked_batches_do_not_hide_the_files_queued_after_them(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dispatcher reads pending batches a page at a time (500; 2 here): a big file whose
    # batches are all parked must not keep a later file of another account from being seen.
    monkeypatch.setattr(dispatcher_module, "PENDING_BATCH_LOOKAHEAD", 2)
    async with dispatching(tmp_path, MORNING) as s:
        for name in ("acme", "other"):
            make_account(s.store, name)
        s.store.set_quiet_hours("acme", NIGHT.window, NIGHT.day_names)
        queue(s.store, "acme", "la.json", numbers("la", 50), end=MORNING + timedelta(hours=6), batch_size=10)
        s.projector.poke()
        files = s.dispatcher.accounts
        await wait_until(lambda: "acme" in files and sum(len(f.parked) for f in files["acme"].files.values()) == 5, every=0.1)
        queue(s.store, "other", "ny.json", numbers("ny", 5), end=None)
        s.projector.poke()
        await wait_until(lambda: len(s.gateway.sent) == 5, every=0.1)
    assert {m.account for _, m in s.gateway.sent} == {"other"}
