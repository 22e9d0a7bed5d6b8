"""The embedded simulator gateway: accepts messages, returns ids, and produces delivery receipts that
are deterministic for a seed (status and delay derive from the seed and the message id).

It remembers the message ids it accepted in an append-only journal, so a message re-submitted after
a crash is recognised and not "sent" twice — the property the restart tests check. Only the last
REMEMBER of them count (a re-submission is of the messages whose MessageSubmitted a crash lost: a
flush's worth); the journal is cut back to those when it opens at more than twice as many.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import trio

from actors.gateway import GatewayReceipt, GatewayReply, GatewayReport, OutboundMessage
from sftpsms.gateways import SimulatorGatewayConfig

REMEMBER = 100_000  # accepted message ids kept (memory and journal)
MAX_PENDING = 20_000  # reports not yet handed on; submit waits beyond this, as an SMSC's window would


class Simulator:
    """The embedded gateway. Receipts carry the gateway id as `submit` returned it; a configured
    share of messages also gets a reply (deterministic: the same messages every run)."""

    concurrency = 1  # submit never waits: one sender task keeps up with any configured rate

    def __init__(
        self,
        journal_dir: Path,
        reports: trio.MemorySendChannel[GatewayReport],
        config: SimulatorGatewayConfig | None = None,
    ) -> None:
        self.config = config or SimulatorGatewayConfig()
        self.name = self.config.name
        self.seed = self.config.seed
        self._seed = f"{self.seed}:".encode()
        self.delay = self.config.delay
        self._reports = reports
        self._due: list[tuple[float, int, GatewayReport]] = []
        self._counter = 0
        self._wake = trio.Event()
        self.max_pending = MAX_PENDING
        self._in_hand = 0  # the report being handed on (the receiver may make it wait)
        self._room = trio.Event()  # set when pending reports drop below max_pending
        journal_dir.mkdir(parents=True, exist_ok=True)
        self.journal = journal_dir / "accepted.log"
        # message id (as an int: no object for the garbage collector to visit) → gateway id
        self.accepted: dict[int, str] = {}
        self._order: deque[int] = deque()
        self.duplicates = 0
        if self.journal.exists():
            lines = self.journal.read_text().splitlines()
            if len(lines) > 2 * REMEMBER:
                lines = lines[-REMEMBER:]
                fresh = self.journal.with_name(f".{self.journal.name}.tmp")
                fresh.write_text("".join(f"{line}\n" for line in lines))
                os.replace(fresh, self.journal)
            for line in lines:
                message, _, gateway_id = line.partition(" ")
                if gateway_id:
                    self._remember(UUID(message).int, gateway_id)
        self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _remember(self, message: int, gateway_id: str) -> None:
        if message not in self.accepted:
            self._order.append(message)
        self.accepted[message] = gateway_id
        while len(self._order) > REMEMBER:
            self.accepted.pop(self._order.popleft(), None)

    def close(self) -> None:
        os.close(self._fd)

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

    def _schedule(self, due: float, report: GatewayReport) -> None:
        self._counter += 1
        heapq.heappush(self._due, (due, self._counter, report))
        self._wake.set()

    async def submit(self, message: OutboundMessage) -> tuple[str, ...]:
        """Accept a message and schedule its receipt (and reply). Waits while MAX_PENDING reports
        are waiting to be handed on: when receipts are recorded more slowly than messages are
        sent, sending slows down to match instead of the reports piling up in memory."""
        while self._pending >= self.max_pending:
            await self._room.wait()
        known = self.accepted.get(message.message_id.int)
        if known is not None:
            self.duplicates += 1
            return (known,)
        id_roll, status_roll, reply_roll, delay_roll = self._rolls(message.message_id)
        gateway_id = f"{id_roll % 10**12:012d}"
        # One write(2) per message: it survives a SIGKILL of the process (the kernel has it).
        os.write(self._fd, f"{message.message_id} {gateway_id}\n".encode())
        self._remember(message.message_id.int, gateway_id)
        spread = 0.5 + (delay_roll % 1000) / 1000
        due = trio.current_time() + self.delay * spread
        at = datetime.now(UTC) + timedelta(seconds=self.delay * spread)
        self._schedule(
            due,
            GatewayReceipt(
                gateway=self.name,
                gateway_id=gateway_id,
                status=self._status(status_roll),
                at=at,
                message_id=message.message_id,
            ),
        )
        if reply_roll % 1000 < self.config.reply_per_mille:
            self._schedule(
                due + self.delay,
                GatewayReply(
                    gateway=self.name,
                    reply_id=f"R{gateway_id}",
                    msisdn=message.msisdn,
                    to=message.sender_id,
                    text=self.config.reply_text,
                    at=at + timedelta(seconds=self.delay),
                    in_reply_to=gateway_id,
                ),
            )
        return (gateway_id,)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver reports when they are due, until cancelled. One task, a heap of due reports."""
        task_status.started()
        with self._reports:
            while True:
                if not self._due:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                due, _, report = self._due[0]
                now = trio.current_time()
                if due > now:
                    await trio.lowlevel.checkpoint()  # reports handed on without waiting, then rest
                    if self._due[0][0] <= trio.current_time():
                        continue
                    with trio.move_on_after(due - now):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                heapq.heappop(self._due)
                try:
                    self._reports.send_nowait(report)  # usually room: no trip through the scheduler
                except trio.WouldBlock:
                    self._in_hand = 1
                    await self._reports.send(report)
                    self._in_hand = 0
                if self._pending < self.max_pending:
                    self._room.set()
                    self._room = trio.Event()
