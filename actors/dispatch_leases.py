"""Dispatch across several nodes: which node sends which account's messages, and the shared rates.

An account's messages are sent only by the node holding the lease `dispatch:<account>`
(eventstore/leases.py: a PostgreSQL advisory lock of the node's session, freed by PostgreSQL when
the node dies). The dispatcher (actors/dispatcher.py) takes in only the batches of the accounts
in its `admitted` set; this module decides that set.

Spreading. Every LEASE_INTERVAL each node looks at the accounts with work (sealed batches not
dispatched, or a cancel/pause/resume not yet honoured, in its read model) and at the live nodes
(`Leases.live_nodes`: the nodes whose lease connection PostgreSQL holds open, so a killed node
drops out at the moment its leases are freed: no heartbeats to time out). It holds at most
ceil(accounts with work / live nodes) leases: it takes free leases of accounts with work up to
that quota, gives back (one per REBALANCE_INTERVAL, so the nodes do not trade accounts back and
forth) what it holds beyond it, and gives back the lease of an account with no work left. The
nodes' views of the read model differ by a moment at most, so every account with work is held
within a round or two; a killed node's accounts within LEASE_INTERVAL plus a catch-up.

Taking a lease. The node's read model may lag the store, so before an account is admitted its
read model is caught up to at least the store's position at the moment the lease was taken: every
batch queued before then is seen, and every batch is loaded from the store (its DispatchLog says
what was submitted, by whichever node). Gateways that remember other nodes' submissions (the
simulator: `read_peers`/`adopt_peers`) read them now, so a message the dead node handed over but
never recorded as MessageSubmitted is recognised when it is sent again with the same id.

Giving a lease back (or losing it). The account leaves the rounds at once; its messages waiting in
a lane go back to their batches; the dispatcher waits for those at the gateway, writes what it
collected and forgets the account (its batches, so a later lease reloads them from the store),
then releases the lease. A lease lost with the connection (`check` failed) is handled the same
way, except that progress that cannot be written any more is dropped: the next holder sends those
messages again with the same ids, and the events' optimistic concurrency refuses a second writer.

Rates. Per-account rates are the lease holder's local buckets (one holder, one bucket). The
service's rate and each gateway's are SharedBuckets (actors/shared_rates.py) drawn from
PostgreSQL, so they hold for the cluster whatever the spread of work.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from actors.dispatcher import ActiveBatch, Dispatcher
from actors.faults import log_failure
from actors.gateway import Gateway
from actors.shared_rates import SharedBucket
from eventstore.leases import Leases
from eventstore.rate_buckets import SharedBuckets
from eventstore.store import SmsStore

log = logging.getLogger(__name__)

PREFIX = "dispatch:"
LEASE_INTERVAL = 0.5  # seconds between looks at leases, live nodes and accounts with work
REBALANCE_INTERVAL = 2.0  # seconds between two leases given back to make room for another node
CATCH_UP_POLL = 0.05  # seconds between looks at the read model's position after taking a lease
SETTLE_POLL = 0.01

_WORK = (
    "SELECT DISTINCT account FROM batches WHERE dispatched = 0 AND sealed = 1 AND queued > 0"
    " UNION SELECT account FROM file_controls WHERE applied < requested"
)


def accounts_with_work(readmodels_db: Path) -> set[str]:
    db = sqlite3.connect(readmodels_db, timeout=30)
    try:
        return {str(row[0]) for row in db.execute(_WORK)}
    except sqlite3.OperationalError:
        return set()  # the read model is not made yet
    finally:
        db.close()


def read_model_position(readmodels_db: Path) -> int:
    from eventstore.projections import ReadModels

    models = ReadModels(readmodels_db)
    try:
        return models.position()
    finally:
        models.close()


class DispatchLeases:
    """The lease keeper of one node's dispatcher (PostgreSQL stores only).

    Resource handling: `leases` and `buckets` belong to the caller, who closes them after `run`.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        leases: Leases,
        reader: SmsStore,
        readmodels_db: Path,
        gateways: Mapping[str, Gateway],
        buckets: SharedBuckets | None = None,
        gateway_rates: Mapping[str, float | None] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.leases = leases
        self.reader = reader
        self.readmodels_db = readmodels_db
        self.gateways = gateways
        dispatcher.admitted = set()  # nothing until a lease is taken
        self.activating: set[str] = set()
        self.last_rebalance = -math.inf
        self.taken = 0  # leases taken (logs, tests)
        self.shared: list[SharedBucket] = []
        if buckets is not None:
            self._share_rates(buckets, gateway_rates or {})

    def _share_rates(self, buckets: SharedBuckets, gateway_rates: Mapping[str, float | None]) -> None:
        dispatcher = self.dispatcher

        def wake() -> None:
            dispatcher._wake.set()

        dispatcher.global_bucket = SharedBucket("service", dispatcher.settings.send_rate, buckets, wake)
        self.shared.append(dispatcher.global_bucket)
        for name, lane in dispatcher.lanes.items():
            rate = gateway_rates.get(name)
            if rate:
                lane.bucket = SharedBucket(f"gateway:{name}", rate, buckets, wake)
                self.shared.append(lane.bucket)

    @property
    def admitted(self) -> set[str]:
        assert self.dispatcher.admitted is not None
        return self.dispatcher.admitted

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the leases until cancelled (the caller's `leases.close()` then frees them all; what
        was sent and not yet written is sent again by the next holder, as after a crash).

        Error handling: a failing round is logged and the next one tries again; a lost store
        connection loses every lease (see the module docstring)."""
        async with trio.open_nursery() as nursery:
            for bucket in self.shared:
                nursery.start_soon(bucket.run)
            task_status.started()
            while True:
                try:
                    await self._round(nursery)
                except Exception:
                    log_failure(log, "dispatch leases: round failed; trying again")
                await trio.sleep(LEASE_INTERVAL)

    def _look(self) -> tuple[bool, int, set[str], frozenset[str]]:
        alive = self.leases.check()
        live = self.leases.live_nodes() if alive else 1
        return alive, live, accounts_with_work(self.readmodels_db), self.leases.held()

    async def _round(self, nursery: trio.Nursery) -> None:
        alive, live, work, keys = await trio.to_thread.run_sync(self._look)
        held = {key.removeprefix(PREFIX) for key in keys if key.startswith(PREFIX)}
        for account in list(self.admitted):
            if account not in held:  # the connection, and so the lease, is gone
                log.warning("account=%s dispatch lease lost", account)
                await self._forget(account, lost=True)
        if not alive:
            return
        busy = work | set(self.dispatcher.accounts)
        for account in sorted(held - busy - self.activating):
            await self._forget(account, lost=False)  # nothing left to send
            held.discard(account)
        quota = math.ceil(len(work) / live) if work else 0
        now = trio.current_time()
        if len(held) > max(quota, 1) and now - self.last_rebalance >= REBALANCE_INTERVAL:
            self.last_rebalance = now
            spare = sorted(held - self.activating)
            if spare:
                log.info("account=%s dispatch lease given back: %d held, %d for each of %d nodes", spare[-1], len(held), quota, live)
                await self._forget(spare[-1], lost=False)
                held.discard(spare[-1])
        for account in sorted(work - held):
            if len(held) >= quota:
                break
            if await trio.to_thread.run_sync(self.leases.try_hold, PREFIX + account):
                held.add(account)
                self.activating.add(account)
                nursery.start_soon(self._activate, account)

    async def _activate(self, account: str) -> None:
        """The lease is ours: catch the read model up to the store's position now, let gateways
        learn what other nodes sent, then admit the account."""
        try:
            taken = trio.current_time()
            position = await trio.to_thread.run_sync(self.reader.last_position)
            # Polled: the projector follows the log in its own task (and another process may write).
            while await trio.to_thread.run_sync(read_model_position, self.readmodels_db) < position:  # noqa: ASYNC110
                await trio.sleep(CATCH_UP_POLL)
            for gateway in self.gateways.values():
                read_peers = getattr(gateway, "read_peers", None)
                if read_peers is not None:
                    gateway.adopt_peers(await trio.to_thread.run_sync(read_peers))  # type: ignore[attr-defined]
            if not self.leases.holds(PREFIX + account):
                return
            self.dispatcher.stopping.discard(account)
            self.admitted.add(account)
            self.taken += 1
            log.info(
                "account=%s dispatch lease taken (read model at %d after %.3f s)",
                account, position, trio.current_time() - taken,
            )
            await self.dispatcher.refill()
        except Exception:
            log_failure(log, f"account={account} taking the dispatch lease failed; given back")
            await trio.to_thread.run_sync(self.leases.release, PREFIX + account)
        finally:
            self.activating.discard(account)

    async def _forget(self, account: str, *, lost: bool) -> None:
        """Take the account out of this node's dispatcher (see the module docstring), then release
        its lease (a lost one is gone already)."""
        dispatcher = self.dispatcher
        self.admitted.discard(account)
        dispatcher.stopping.add(account)
        queue = dispatcher.accounts.pop(account, None)
        batches: list[ActiveBatch] = []
        if queue is not None:
            for file_queue in queue.files.values():
                while file_queue.loading:  # noqa: ASYNC110 - a moment: the loader finishes its read
                    await trio.sleep(SETTLE_POLL)
                batches += dispatcher._in_memory(file_queue)
        await dispatcher._settle(batches)
        ids = {batch.log.id for batch in batches} | {
            log_id for log_id, dispatch in dispatcher.dirty.items() if dispatch.account == account
        }
        try:
            await dispatcher.flush()
        except Exception:
            # Cannot be written (the store is unreachable, or the next holder wrote first): the
            # next holder sends these again with the same ids.
            log_failure(log, f"account={account} writing the progress of a dispatch lease failed")
            dropped = [event for event in dispatcher.unsaved if _originator(event) in ids]
            dispatcher.unsaved = [event for event in dispatcher.unsaved if _originator(event) not in ids]
            for key in [key for key in dispatcher.refunds if key[0] == account]:
                del dispatcher.refunds[key]
            log.warning("account=%s %d events of a lost dispatch lease dropped", account, len(dropped))
        dispatcher.known -= dispatcher.batches_of.pop(account, set())
        dispatcher.stopping.discard(account)
        if not lost:
            await trio.to_thread.run_sync(self.leases.release, PREFIX + account)


def _originator(event: Any) -> Any:
    return getattr(event, "originator_id", None)
