"""The embedded simulator gateway: accepts messages, returns ids, and produces delivery receipts that
are deterministic for a seed (status and delay derive from the seed and the message id).

It keeps three append-only journals, each line one write(2) (the kernel has it once write returns:
it survives a SIGKILL of the process, not a power cut):

- `accepted.log`: `<message id> <gateway id> <receipt due, Unix seconds>[ <msisdn> <sender id>]`
  (number and sender only for messages that get a reply). A message re-submitted after a crash is
  recognised and not "sent" twice — only the last REMEMBER ids count for that (a re-submission is
  of the messages whose MessageSubmitted a crash lost: a flush's worth).
- `reported.log`: `<message id>` once the receipts actor has *recorded* a message's receipt,
  `<message id> reply` once it recorded its reply. What is accepted and not reported is what the
  simulator owes: after a restart it reports it again (the receipts actor records a message's
  status once, so a receipt recorded just before a crash is not recorded twice).
- `resubmitted.log`: `<message id>` for each submission of an id it had already accepted (after a
  crash; answered with the first gateway id and not sent again), for audits such as scripts/chaos.

Several nodes (a PostgreSQL store) stand for one SMSC: each node's simulator keeps its own journals
(DATA/nodes/<node>/simulator), and given `peers` (DATA/nodes) it follows the other nodes' journals
(every PEER_INTERVAL, and at once when its node takes over an account: `read_peers`, then
`adopt_peers`). A message another node handed over and never recorded as MessageSubmitted is then
recognised when it is sent again: answered with the first gateway id, written to this node's
journals and counted as a re-submission, and its receipt is made here. A report another node
accepted and no node's `reported.log` shows recorded PEER_GRACE after it was due is owed by a node
that is gone: it is made here (the receipts actor records a message's status once, so a report
made by two nodes counts once).

The journals are cut back when they open at more than twice REMEMBER lines: the last REMEMBER
messages and every one still owed stay; what is owed for longer than OWED_FOR is forgotten.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import trio

from actors.gateway import GatewayReceipt, GatewayReply, GatewayReport, OutboundMessage
from sftpsms.gateways import SimulatorGatewayConfig

log = logging.getLogger(__name__)

REMEMBER = 100_000  # accepted message ids kept (memory and journal)
PEER_INTERVAL = 1.0  # seconds between looks at the other nodes' journals (several nodes)
PEER_GRACE = 3.0  # seconds past due after which a report no node recorded is made here
MAX_PENDING = 20_000  # reports not yet handed on; submit waits beyond this, as an SMSC's window would
OWED_FOR = 7 * 86_400.0  # seconds past its due time a report is still owed after restarts
ACCEPTED_NAME = "accepted.log"
REPORTED_NAME = "reported.log"
RESUBMITTED_NAME = "resubmitted.log"
_RECEIPT, _REPLY = 0, 1

# A report waiting in the heap, as ints and strings (no object for the garbage collector to visit
# again and again): due (trio clock), tie-breaker, kind, message id, gateway id, due (Unix seconds),
# and for a reply the number and the sender id.
_Due = tuple[float, int, int, int, str, float, str, str]
# A report owed from an earlier run: kind, message id, gateway id, due (Unix seconds), msisdn, sender.
_Owed = tuple[int, int, str, float, str, str]


class Simulator:
    """The embedded gateway. Receipts carry the gateway id as `submit` returned it, and our message
    id; a configured share of messages also gets a reply (deterministic: the same messages every
    run).

    Resource handling: the journals' file descriptors are opened here and closed by `close`.
    """

    concurrency = 1  # submit never waits: one sender task keeps up with any configured rate

    def __init__(
        self,
        journal_dir: Path,
        reports: trio.MemorySendChannel[GatewayReport],
        config: SimulatorGatewayConfig | None = None,
        *,
        remember: int | None = None,
        peers: Path | None = None,
    ) -> None:
        self.config = config or SimulatorGatewayConfig()
        self.name = self.config.name
        self.seed = self.config.seed
        self._seed = f"{self.seed}:".encode()
        self.delay = self.config.delay
        self.remember = remember or REMEMBER
        self._reports = reports
        self._due: list[_Due] = []
        self._counter = 0
        self._wake = trio.Event()
        self.max_pending = MAX_PENDING
        self._in_hand = 0  # the report being handed on (the receiver may make it wait)
        self._room = trio.Event()  # set when pending reports drop below max_pending
        journal_dir.mkdir(parents=True, exist_ok=True)
        self.journal = journal_dir / ACCEPTED_NAME
        self.reported_journal = journal_dir / REPORTED_NAME
        self.resubmitted_journal = journal_dir / RESUBMITTED_NAME
        # message id (as an int: no object for the garbage collector to visit) → gateway id
        self.accepted: dict[int, str] = {}
        self._order: deque[int] = deque()
        self.duplicates = 0
        self.owed: list[_Owed] = self._load()  # reports an earlier run accepted and never saw recorded
        self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._reported_fd = os.open(self.reported_journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._resubmitted_fd = -1
        # Other nodes' simulators (see the module docstring): their journal directories' parent,
        # how far each accepted journal was read, and what they accepted that this one has not.
        self.peers = peers
        self._peer_offsets: dict[Path, int] = {}
        self.peer_accepted: OrderedDict[int, tuple[str, float, str, str]] = OrderedDict()
        # (kind, message) → (gateway id, due, msisdn, sender): reports peers accepted, not yet seen recorded
        self._peer_unreported: OrderedDict[tuple[int, int], tuple[str, float, str, str]] = OrderedDict()
        self._peer_recorded: OrderedDict[tuple[int, int], None] = OrderedDict()
        self.taken_over = 0  # reports owed by another node and made here

    def _load(self) -> list[_Owed]:
        """Read the journals: remember the last accepted ids, and return what is still owed (in
        acceptance order). Cut the journals back when they hold more than twice what is kept."""
        if not self.journal.exists():
            return []
        receipts_done: set[int] = set()
        replies_done: set[int] = set()
        if self.reported_journal.exists():
            with self.reported_journal.open("rb") as reported:
                for raw in reported:
                    done, _, kind = raw.strip().partition(b" ")
                    try:
                        (replies_done if kind == b"reply" else receipts_done).add(UUID(done.decode()).int)
                    except ValueError:
                        continue  # a line torn by a crash mid-write: that report is made again
        now = time.time()
        lines = self.journal.read_bytes().decode(errors="replace").splitlines()
        owed: list[_Owed] = []
        owed_lines: list[int] = []  # line numbers of messages still owing something
        forgotten = 0
        for number, line in enumerate(lines):
            fields = line.split(" ", 4)
            try:
                message = UUID(fields[0]).int
                gateway_id = fields[1]
                due = float(fields[2]) if len(fields) > 2 else now  # older lines: report now
            except (ValueError, IndexError):
                continue  # a torn last line: that message was not acknowledged, it is sent again
            self._remember(message, gateway_id)
            msisdn, sender = (fields[3], fields[4]) if len(fields) == 5 else ("", "")
            receipt_owed = message not in receipts_done
            reply_owed = bool(msisdn) and message not in replies_done
            if not (receipt_owed or reply_owed):
                continue
            if due < now - OWED_FOR:
                forgotten += 1
                continue
            if receipt_owed:
                owed.append((_RECEIPT, message, gateway_id, due, "", ""))
            if reply_owed:
                owed.append((_REPLY, message, gateway_id, due + self.delay, msisdn, sender))
            owed_lines.append(number)
        if forgotten:
            log.warning("simulator: %d reports owed for over %.0f days forgotten", forgotten, OWED_FOR / 86_400)
        if len(lines) > 2 * self.remember:
            keep = sorted(set(owed_lines) | set(range(max(0, len(lines) - self.remember), len(lines))))
            kept = [lines[number] for number in keep]
            kept_ids = {UUID(line.split(" ", 1)[0]).int for line in kept}
            acks = [f"{UUID(int=m)}\n" for m in receipts_done if m in kept_ids]
            acks += [f"{UUID(int=m)} reply\n" for m in replies_done if m in kept_ids]
            self._rewrite(self.reported_journal, acks)  # acks first: a crash between keeps them
            self._rewrite(self.journal, [f"{line}\n" for line in kept])
        return owed

    @staticmethod
    def _rewrite(path: Path, lines: list[str]) -> None:
        fresh = path.with_name(f".{path.name}.tmp")
        with fresh.open("w") as out:
            out.write("".join(lines))
            out.flush()
            os.fsync(out.fileno())
        os.replace(fresh, path)

    def _remember(self, message: int, gateway_id: str) -> None:
        if message not in self.accepted:
            self._order.append(message)
        self.accepted[message] = gateway_id
        while len(self._order) > self.remember:
            self.accepted.pop(self._order.popleft(), None)

    def close(self) -> None:
        for fd in (self._fd, self._reported_fd, self._resubmitted_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._reported_fd = self._resubmitted_fd = -1

    def recorded(self, reports: Sequence[GatewayReport]) -> None:
        """The receipts actor recorded these reports (or found them recorded already): this
        simulator's among them are no longer owed. One write(2) for the lot."""
        lines = [
            f"{report.message_id}\n" if isinstance(report, GatewayReceipt) else f"{report.message_id} reply\n"
            for report in reports
            if report.gateway == self.name and report.message_id is not None
        ]
        if lines and self._reported_fd >= 0:
            os.write(self._reported_fd, "".join(lines).encode())

    def _rolls(self, message: UUID) -> tuple[int, int, int, int]:
        """Four independent numbers drawn from the seed and the message id (one SHA-256: its
        four 8-byte quarters): the gateway id, the status, whether it replies, the delay."""
        digest = hashlib.sha256(self._seed + message.bytes).digest()
        return (
            int.from_bytes(digest[0:8], "big"),
            int.from_bytes(digest[8:16], "big"),
            int.from_bytes(digest[16:24], "big"),
            int.from_bytes(digest[24:32], "big"),
        )

    def gateway_id(self, message: UUID) -> str:
        return f"{self._rolls(message)[0] % 10**12:012d}"

    def status(self, message: UUID) -> str:
        return self._status(self._rolls(message)[1])

    def _status(self, roll: int) -> str:
        roll %= 1000
        if roll < self.config.failed_per_mille:
            return "failed"
        if roll < self.config.failed_per_mille + self.config.expired_per_mille:
            return "expired"
        return "delivered"

    def replies_to(self, message: UUID) -> bool:
        return self._rolls(message)[2] % 1000 < self.config.reply_per_mille

    @property
    def _pending(self) -> int:
        return len(self._due) + self._in_hand

    def _schedule(self, due: float, kind: int, message: int, gateway_id: str, at: float, msisdn: str = "", sender: str = "") -> None:
        self._counter += 1
        heapq.heappush(self._due, (due, self._counter, kind, message, gateway_id, at, msisdn, sender))
        self._wake.set()

    def _report(self, entry: _Due) -> GatewayReport:
        _, _, kind, message, gateway_id, at, msisdn, sender = entry
        message_id = UUID(int=message)
        if kind == _RECEIPT:
            return GatewayReceipt(
                gateway=self.name,
                gateway_id=gateway_id,
                status=self.status(message_id),
                at=datetime.fromtimestamp(at, UTC),
                message_id=message_id,
            )
        return GatewayReply(
            gateway=self.name,
            reply_id=f"R{gateway_id}",
            msisdn=msisdn,
            to=sender,
            text=self.config.reply_text,
            at=datetime.fromtimestamp(at, UTC),
            in_reply_to=gateway_id,
            message_id=message_id,
        )

    def read_peers(self) -> tuple[list[tuple[int, str, float, str, str]], list[tuple[int, int]]]:
        """What the nodes' simulators wrote since the last call: the other nodes' acceptances
        (message id, gateway id, receipt due, msisdn, sender) and every node's recorded reports
        ((kind, message id)). In a worker thread."""
        if self.peers is None or not self.peers.is_dir():
            return [], []
        own = self.journal.resolve()
        accepted: list[tuple[int, str, float, str, str]] = []
        recorded: list[tuple[int, int]] = []
        folder = self.journal.parent.name
        for journal in sorted(self.peers.glob(f"*/{folder}/{ACCEPTED_NAME}")):
            if journal.resolve() == own:
                continue
            for line in self._peer_lines(journal):
                fields = line.split(" ", 4)
                try:
                    message, gateway_id, due = UUID(fields[0]).int, fields[1], float(fields[2])
                except (ValueError, IndexError):
                    continue
                msisdn, sender = (fields[3], fields[4]) if len(fields) == 5 else ("", "")
                accepted.append((message, gateway_id, due, msisdn, sender))
        for journal in sorted(self.peers.glob(f"*/{folder}/{REPORTED_NAME}")):
            for line in self._peer_lines(journal):
                done, _, kind = line.strip().partition(" ")
                try:
                    recorded.append((_REPLY if kind == "reply" else _RECEIPT, UUID(done).int))
                except ValueError:
                    continue
        return accepted, recorded

    def _peer_lines(self, journal: Path) -> list[str]:
        """The whole lines added to `journal` since it was last read (from the start when it was
        cut back meanwhile)."""
        offset = self._peer_offsets.get(journal, 0)
        try:
            with journal.open("rb") as peer:
                if peer.seek(0, os.SEEK_END) < offset:
                    offset = 0
                peer.seek(offset)
                data = peer.read()
        except OSError:
            return []
        complete = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._peer_offsets[journal] = offset + complete
        return data[:complete].decode(errors="replace").splitlines()

    def adopt_peers(self, found: tuple[list[tuple[int, str, float, str, str]], list[tuple[int, int]]]) -> None:
        """Remember what `read_peers` found (the last `remember` of each), and make here the
        reports a gone node owes (see the module docstring)."""
        accepted, recorded = found
        for message, gateway_id, due, msisdn, sender in accepted:
            if message in self.accepted:
                continue
            entry = (gateway_id, due, msisdn, sender)
            self.peer_accepted[message] = entry
            if (_RECEIPT, message) not in self._peer_recorded:
                self._peer_unreported[(_RECEIPT, message)] = entry
            if msisdn and (_REPLY, message) not in self._peer_recorded:
                self._peer_unreported[(_REPLY, message)] = (gateway_id, due + self.delay, msisdn, sender)
        for key in recorded:
            self._peer_unreported.pop(key, None)
            self._peer_recorded[key] = None
        for table in (self.peer_accepted, self._peer_unreported, self._peer_recorded):
            while len(table) > 2 * self.remember:
                table.popitem(last=False)
        late = time.time() - PEER_GRACE
        clock, wall = trio.current_time(), time.time()
        for key, (gateway_id, due, msisdn, sender) in list(self._peer_unreported.items()):
            if due > late:
                break  # in journal order, so nearly in due order: the rest is later
            del self._peer_unreported[key]
            kind, message = key
            if message in self.accepted:
                continue  # sent again here, and so reported here
            self.taken_over += 1
            self._schedule(clock + max(0.0, due - wall), kind, message, gateway_id, due, msisdn, sender)

    async def follow_peers(self) -> None:
        """Follow the other nodes' journals every PEER_INTERVAL, until cancelled."""
        while True:
            try:
                self.adopt_peers(await trio.to_thread.run_sync(self.read_peers))
            except Exception:  # noqa: BLE001 - a shared folder hiccup: read again next time
                log.warning("simulator: reading the other nodes' journals failed", exc_info=True)
            await trio.sleep(PEER_INTERVAL)

    def _adopt(self, message: OutboundMessage, peer: tuple[str, float, str, str]) -> tuple[str, ...]:
        """A re-submission of a message another node's simulator accepted: answered with its gateway
        id and taken over here (journal line, receipt, reply)."""
        gateway_id, at, msisdn, sender = peer
        self._note_duplicate(message)
        extra = f" {msisdn} {sender}" if msisdn else ""
        os.write(self._fd, f"{message.message_id} {gateway_id} {at:.3f}{extra}\n".encode())
        self._remember(message.message_id.int, gateway_id)
        due = trio.current_time() + max(0.0, at - time.time())
        self._schedule(due, _RECEIPT, message.message_id.int, gateway_id, at)
        if msisdn:
            self._schedule(due + self.delay, _REPLY, message.message_id.int, gateway_id, at + self.delay, msisdn, sender)
        return (gateway_id,)

    def _note_duplicate(self, message: OutboundMessage) -> None:
        self.duplicates += 1
        if self._resubmitted_fd < 0:
            self._resubmitted_fd = os.open(self.resubmitted_journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._resubmitted_fd, f"{message.message_id}\n".encode())

    async def submit(self, message: OutboundMessage) -> tuple[str, ...]:
        """Accept a message and schedule its receipt (and reply). Waits while MAX_PENDING reports
        are waiting to be handed on: when receipts are recorded more slowly than messages are
        sent, sending slows down to match instead of the reports piling up in memory."""
        while self._pending >= self.max_pending:
            await self._room.wait()
        known = self.accepted.get(message.message_id.int)
        if known is not None:
            self._note_duplicate(message)
            return (known,)
        if self.peer_accepted:
            peer = self.peer_accepted.pop(message.message_id.int, None)
            if peer is not None:
                return self._adopt(message, peer)
        id_roll, _status_roll, reply_roll, delay_roll = self._rolls(message.message_id)
        gateway_id = f"{id_roll % 10**12:012d}"
        spread = self.delay * (0.5 + (delay_roll % 1000) / 1000)
        at = time.time() + spread
        # No simulated reply to an auto-reply (a message pinned to its gateway): a simulated
        # "HELP" would be answered, and its answer answered, for ever.
        replies = message.gateway is None and reply_roll % 1000 < self.config.reply_per_mille
        # The sender id is the rest of the line; a newline in it would break the journal.
        sender = message.sender_id.replace("\n", " ")
        extra = f" {message.msisdn} {sender}" if replies else ""
        # One write(2) per message: it survives a SIGKILL of the process (the kernel has it).
        os.write(self._fd, f"{message.message_id} {gateway_id} {at:.3f}{extra}\n".encode())
        self._remember(message.message_id.int, gateway_id)
        due = trio.current_time() + spread
        self._schedule(due, _RECEIPT, message.message_id.int, gateway_id, at)
        if replies:
            self._schedule(due + self.delay, _REPLY, message.message_id.int, gateway_id, at + self.delay, message.msisdn, sender)
        return (gateway_id,)

    def _schedule_owed(self) -> None:
        """Put what an earlier run owes back in the heap, each at its due time (at once if past)."""
        clock, wall = trio.current_time(), time.time()
        for kind, message, gateway_id, at, msisdn, sender in self.owed:
            self._schedule(clock + max(0.0, at - wall), kind, message, gateway_id, at, msisdn, sender)
        if self.owed:
            log.info("simulator: %d reports owed from an earlier run scheduled again", len(self.owed))
        self.owed = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver reports when they are due, until cancelled. One task, a heap of due reports,
        starting with those an earlier run owes."""
        self._schedule_owed()
        async with trio.open_nursery() as nursery:
            if self.peers is not None:
                nursery.start_soon(self.follow_peers)
            task_status.started()
            await self._deliver()

    async def _deliver(self) -> None:
        with self._reports:
            while True:
                if not self._due:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                due = self._due[0][0]
                now = trio.current_time()
                if due > now:
                    await trio.lowlevel.checkpoint()  # reports handed on without waiting, then rest
                    if self._due[0][0] <= trio.current_time():
                        continue
                    with trio.move_on_after(due - now):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                report = self._report(heapq.heappop(self._due))
                try:
                    self._reports.send_nowait(report)  # usually room: no trip through the scheduler
                except trio.WouldBlock:
                    self._in_hand = 1
                    await self._reports.send(report)
                    self._in_hand = 0
                if self._pending < self.max_pending:
                    self._room.set()
                    self._room = trio.Event()
