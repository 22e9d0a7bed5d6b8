"""The dispatcher's scheduling: fairness across accounts and files, rates in parts per second
(service, gateway, account), routing to gateways by prefix, gateways that fail or refuse.

The store, the writer and the read models are real; the gateways here are small in-process ones
that record what they were given and when (virtual time: autojump_clock). The real gateways
(simulator, HTTP, SMPP) have their own tests against real peers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from uuid import UUID, uuid5

import pytest
import trio
from eventsourcing.application import AggregateNotFoundError

from actors.dispatcher import Dispatcher, route_for
from actors.gateway import (
    GatewayReceipt,
    GatewayRejected,
    GatewayReport,
    GatewayUnavailable,
    OutboundMessage,
)
from actors.projector import Projector
from actors.submissions import RecentSubmissions
from actors.writer import open_store_channel, run_writer
from eventstore.domain import NAMESPACE, ContactBatch, DispatchLog, dispatch_log_id
from eventstore.store import SmsStore, open_store
from sftpsms.config import Settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass
class RecordingGateway:
    """Accepts everything at once and remembers (time, message) in order."""

    name: str
    sent: list[tuple[float, OutboundMessage]] = field(default_factory=list)
    concurrency: int = 1

    async def submit(self, message: OutboundMessage) -> tuple[str, ...]:
        await trio.lowlevel.checkpoint()
        self.sent.append((trio.current_time(), message))
        return (f"{self.name}-{message.file_id}-{message.index}",)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


@dataclass
class FlakyGateway(RecordingGateway):
    """Unavailable for its first `down` submissions; refuses numbers in `refuse`."""

    down: int = 0
    refuse: frozenset[str] = frozenset()
    attempts: int = 0

    async def submit(self, message: OutboundMessage) -> tuple[str, ...]:
        self.attempts += 1
        if self.attempts <= self.down:
            raise GatewayUnavailable("connection refused")
        if message.msisdn in self.refuse:
            raise GatewayRejected(self.name, "invalid destination")
        return await super().submit(message)


def make_account(store: SmsStore, name: str) -> None:
    store.create_account(username=name, password_hash="x", email=None, country="ZA", created_at=NOW)


def queue_file(store: SmsStore, account: str, name: str, count: int, *, prefix: str = "2783", parts: int = 1,
               batch_size: int = 1000, not_before: str | None = None) -> UUID:
    """Sealed contact batches of `count` messages, as pass 2 leaves them."""
    file = uuid5(NAMESPACE, f"test-file:{account}:{name}")
    batches = []
    for number, start in enumerate(range(0, count, batch_size)):
        batch = ContactBatch.open(
            file=file, account=account, number=number, sender_id="Acme", not_before=not_before, expires_at=None,
            timestamp=NOW,
        )
        for index in range(start, min(count, start + batch_size)):
            batch.queue(index, f"{prefix}{index:07d}", f"c{index}", "hello" * parts, parts)
        batch.seal()
        batches.append(batch)
    store.save(*batches)
    return file


@dataclass
class Harness:
    store: SmsStore
    dispatcher: Dispatcher
    reports: trio.MemoryReceiveChannel[GatewayReport]
    projector: Projector


@asynccontextmanager
async def dispatching(tmp_path: Path, gateways: dict[str, RecordingGateway], **overrides: object) -> AsyncIterator[Harness]:
    settings = replace(Settings(data_dir=tmp_path), **overrides)  # type: ignore[arg-type]
    store = open_store(tmp_path)
    try:
        projector = Projector(store, settings.readmodels_db)
        async with trio.open_nursery() as nursery:
            client, inbox = open_store_channel()
            await nursery.start(partial(run_writer, inbox, store=store, on_written=projector.poke))
            await nursery.start(projector.run)
            reports_send, reports_receive = trio.open_memory_channel[GatewayReport](10_000)
            rates = {name: getattr(g, "rate", None) for name, g in gateways.items()}
            dispatcher = Dispatcher(
                store=client.clone(), gateways=gateways, settings=settings, recent=RecentSubmissions(),
                reports=reports_send, gateway_rates=rates, reader=store,
            )
            await nursery.start(dispatcher.run)
            yield Harness(store, dispatcher, reports_receive, projector)
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll in virtual time (the gateways here record, they do not signal), giving up after a minute
    of *real* time: virtual time runs ahead without bound while threads (store, read models) work."""
    deadline = time.monotonic() + 60
    while not predicate():  # noqa: ASYNC110
        assert time.monotonic() < deadline, "not reached within a minute"
        await trio.sleep(0.01)


def drain(channel: trio.MemoryReceiveChannel[GatewayReport]) -> list[GatewayReport]:
    found = []
    while True:
        try:
            found.append(channel.receive_nowait())
        except trio.WouldBlock:
            return found


def dispatch_log(store: SmsStore, file: UUID) -> DispatchLog | None:
    try:
        return store.get(DispatchLog, dispatch_log_id(uuid5(file, "batch:0")))
    except AggregateNotFoundError:
        return None


def test_route_for_takes_the_longest_prefix() -> None:
    routes = sorted({"27": "a", "2783": "b"}.items(), key=lambda r: -len(r[0]))
    assert route_for("27831234567", routes, "sim") == "b"
    assert route_for("27821234567", routes, "sim") == "a"
    assert route_for("447700900000", routes, "sim") == "sim"


async def test_a_small_file_waits_at_most_one_round_behind_a_big_one_of_another_account(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = RecordingGateway("simulator")
    async with dispatching(tmp_path, {"simulator": gateway}, send_rate=100.0, account_rate=100.0) as h:
        for name in ("big", "small"):
            make_account(h.store, name)
        queue_file(h.store, "big", "big.json", 3000)
        h.projector.poke()
        await wait_until(lambda: len(gateway.sent) >= 50)
        queue_file(h.store, "small", "small.json", 10)
        h.projector.poke()
        await wait_until(lambda: sum(m.account == "small" for _, m in gateway.sent) == 10)
    order = [m.account for _, m in gateway.sent]
    first, last = order.index("small"), len(order) - 1 - order[::-1].index("small")
    # Between the small file's first and last message the big one sends at most one per round.
    assert order[first : last + 1].count("big") <= 10
    assert order[first : last + 1].count("small") == 10


async def test_files_of_one_account_take_turns(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    gateway = RecordingGateway("simulator")
    async with dispatching(tmp_path, {"simulator": gateway}, send_rate=100.0, account_rate=100.0) as h:
        make_account(h.store, "acme")
        big = queue_file(h.store, "acme", "big.json", 3000)
        h.projector.poke()
        await wait_until(lambda: len(gateway.sent) >= 50)
        small = queue_file(h.store, "acme", "small.json", 10)
        h.projector.poke()
        await wait_until(lambda: sum(m.file_id == small for _, m in gateway.sent) == 10)
    files = [m.file_id for _, m in gateway.sent]
    first, last = files.index(small), len(files) - 1 - files[::-1].index(small)
    assert files[first : last + 1].count(big) <= 10


@pytest.fixture
def scaled_clock() -> trio.testing.MockClock:
    """Virtual time at 2x real time, without autojump: loading a batch on a thread takes a
    bounded amount of virtual time here, where under autojump one account could send its whole
    batch before another's batch had loaded. (At 10x, a 0.1 s stall of a loaded machine, a GC
    pause or a slow read-model refill, was a second of virtual time: 40 messages of the fast
    account lost, 2 % of its minute. At 2x the same stall costs 0.2 s.)"""
    return trio.testing.MockClock(rate=2)


async def test_each_account_gets_its_configured_rate(tmp_path: Path, scaled_clock: trio.testing.MockClock) -> None:
    gateway = RecordingGateway("simulator")
    async with dispatching(tmp_path, {"simulator": gateway}, send_rate=10_000.0, account_rate=5.0) as h:
        for name, rate in (("fast", 40.0), ("slow", 10.0), ("plain", None)):
            make_account(h.store, name)
            if rate:
                h.store.set_send_rate(name, rate)
            # One batch each, so no batch is loaded inside the window (loading is real work on a
            # thread), enough that none runs out within it.
            queue_file(h.store, name, f"{name}.json", 8000, batch_size=8000)
        h.projector.poke()
        # The window opens once all three send (their batches are loaded).
        await wait_until(lambda: {m.account for _, m in gateway.sent} == {"fast", "slow", "plain"})
        start = trio.current_time()
        await trio.sleep(30)
        window = [m.account for t, m in gateway.sent if start <= t < start + 30]
    for account, rate in (("fast", 40.0), ("slow", 10.0), ("plain", 5.0)):
        achieved = window.count(account) / 30
        assert abs(achieved - rate) / rate < 0.02, (account, achieved, rate)


async def test_rates_count_parts_not_messages(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    gateway = RecordingGateway("simulator")
    async with dispatching(tmp_path, {"simulator": gateway}, send_rate=10_000.0, account_rate=30.0) as h:
        make_account(h.store, "acme")
        queue_file(h.store, "acme", "long.json", 2000, parts=3)
        h.projector.poke()
        await wait_until(lambda: len(gateway.sent) >= 10)
        start = trio.current_time()
        await trio.sleep(30)
        in_window = sum(1 for t, _ in gateway.sent if start <= t < start + 30)
    assert abs(in_window / 30 - 10.0) < 0.3  # 30 parts/s of 3-part messages: 10 messages/s


async def test_a_file_scheduled_for_later_holds_one_batch_in_memory(tmp_path: Path) -> None:
    gateway = RecordingGateway("simulator")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with dispatching(tmp_path, {"simulator": gateway}, send_rate=1000.0, account_rate=1000.0) as h:
        make_account(h.store, "acme")
        file = queue_file(h.store, "acme", "tomorrow.json", 50, batch_size=10, not_before=later)
        h.projector.poke()
        await wait_until(lambda: any(q.scheduled for a in h.dispatcher.accounts.values() for q in a.files.values()))
        await trio.sleep(1)  # time for the loader to (wrongly) load more
        queue = h.dispatcher.accounts["acme"].files[str(file)]
        assert len(queue.scheduled) == 1 and queue.loaded is None and queue.active is None
        assert len(queue.batches) == 4 and not queue.loading
        assert gateway.sent == []


async def test_numbers_go_to_their_routes_gateway(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    simulator, smsc = RecordingGateway("simulator"), RecordingGateway("smsc")
    async with dispatching(tmp_path, {"simulator": simulator, "smsc": smsc}, send_rate=1000.0, account_rate=1000.0) as h:
        make_account(h.store, "acme")
        h.store.add_route("2783", "smsc")
        queue_file(h.store, "acme", "a.json", 20, prefix="2783")
        queue_file(h.store, "acme", "b.json", 20, prefix="2782")
        h.projector.poke()
        await wait_until(lambda: len(simulator.sent) + len(smsc.sent) == 40)
    assert {m.msisdn[:4] for _, m in smsc.sent} == {"2783"}
    assert {m.msisdn[:4] for _, m in simulator.sent} == {"2782"}


async def test_a_slow_gateway_does_not_hold_back_another(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    simulator = RecordingGateway("simulator")
    slow = RecordingGateway("slow")
    slow.rate = 1.0  # type: ignore[attr-defined]
    async with dispatching(tmp_path, {"simulator": simulator, "slow": slow}, send_rate=1000.0, account_rate=100.0) as h:
        h.store.add_route("2783", "slow")
        make_account(h.store, "acme")
        queue_file(h.store, "acme", "slow.json", 100, prefix="2783")
        queue_file(h.store, "acme", "fast.json", 500, prefix="2782")
        h.projector.poke()
        await wait_until(lambda: len(simulator.sent) == 500)
        first, last = simulator.sent[0][0], simulator.sent[-1][0]
    assert last - first < 5.5  # 500 at 100/s, not held back by the 1/s gateway
    assert sum(1 for t, _ in slow.sent if first <= t <= last) <= (last - first) + 2  # and that one kept its 1/s


async def test_an_unavailable_gateway_is_paused_and_the_message_sent_once_later(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = FlakyGateway("simulator", down=3)
    async with dispatching(tmp_path, {"simulator": gateway}, send_rate=100.0, account_rate=100.0) as h:
        make_account(h.store, "acme")
        file = queue_file(h.store, "acme", "a.json", 5)
        h.projector.poke()
        await wait_until(lambda: len(gateway.sent) == 5)
        await wait_until(lambda: (found := dispatch_log(h.store, file)) is not None and found.finished)
        await trio.sleep(1)  # a few more rounds: nothing more may go
        log = dispatch_log(h.store, file)
    assert log is not None
    # In order: what the sender had taken when the gateway went down went back ahead of the rest.
    assert [m.index for _, m in gateway.sent] == [0, 1, 2, 3, 4]
    assert gateway.attempts == 3 + 5
    assert sorted(log.submitted_indexes) == [0, 1, 2, 3, 4]
    assert log.finished


async def test_a_refused_message_is_recorded_as_failed_and_not_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = FlakyGateway("simulator", refuse=frozenset({"27830000002"}))
    async with dispatching(tmp_path, {"simulator": gateway}, send_rate=100.0, account_rate=100.0) as h:
        make_account(h.store, "acme")
        file = queue_file(h.store, "acme", "a.json", 5)
        h.projector.poke()
        reports: list[GatewayReport] = []
        await wait_until(lambda: bool(reports.extend(drain(h.reports)) or reports))
        [report] = reports
        await wait_until(lambda: len(gateway.sent) == 4)
        await wait_until(lambda: (found := dispatch_log(h.store, file)) is not None and found.finished)
        await trio.sleep(5)
        log = dispatch_log(h.store, file)
    assert log is not None and log.submitted_indexes[2].startswith("rejected-")  # submitted, failed
    assert sorted(log.submitted_indexes) == [0, 1, 2, 3, 4]
    assert drain(h.reports) == []
    assert isinstance(report, GatewayReceipt)
    assert report.status == "failed" and report.error == "invalid destination"
    assert gateway.attempts == 5
