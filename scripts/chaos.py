"""The chaos run behind scripts/chaos (see there): a big file through the real service, SIGKILLed at
random moments across ingest and dispatch and restarted each time, then proved exact from the
events and the simulator's journal.

The proof, each a total printed and compared:
- every contact queued once (MessageQueued per contact index: exactly one each);
- every message submitted once (MessageSubmitted per message: one each), and the simulator accepted
  each message id once (`simulator/accepted.log`; re-submissions after a kill, which it answered
  with the first id and did not send again, are counted from `resubmitted.log`);
- every message with a final status (DeliveryReported per message: exactly one each);
- credits used = parts sent (reserved minus refunded = the parts of the messages submitted, and the
  balance is what was added minus that).
It exits 1 on any mismatch, 2 when the run itself failed (the service did not come back, the file
did not finish in time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventstore.domain import message_id  # noqa: E402
from eventstore.store import SmsStore, open_store  # noqa: E402
from sftpsms.config import Settings  # noqa: E402
from tests.service import READY, Service  # noqa: E402

ACCOUNT = "chaos"
NAME = "chaos.json"
LONG_EVERY = 10  # every tenth contact has its own two-part message: credits = parts, not contacts
TOPIC = "eventstore.domain:"
QUEUED = TOPIC + "ContactBatch.MessageQueued"
SEALED = TOPIC + "ContactBatch.BatchSealed"
STARTED = TOPIC + "DispatchLog.DispatchStarted"
SUBMITTED = TOPIC + "DispatchLog.MessageSubmitted"
EXPIRED = TOPIC + "DispatchLog.MessageExpired"
REPORTED = TOPIC + "DeliveryLog.DeliveryReported"
RESERVED = TOPIC + "Account.CreditsReserved"
REFUNDED = TOPIC + "Account.CreditsRefunded"
ADDED = TOPIC + "Account.CreditsAdded"


class RunFailed(Exception):
    """The run could not be completed (not a mismatch: there is nothing to prove yet)."""


def generate(path: Path, contacts: int) -> int:
    """The upload; returns the parts it needs (its credits)."""
    parts = 0
    with path.open("w") as out:
        out.write('{"Version": 7, "Message_Template": "Code @@value1@@", "Contacts": [\n')
        for i in range(contacts):
            row: dict[str, Any] = {"msisdn": f"2783{i:07d}", "customerId": f"C{i}", "values": {"value1": str(i)}}
            if i % LONG_EVERY == 0:
                row["message"] = f"Long message {i} " + "x" * 180  # two parts
                parts += 2
            else:
                parts += 1
            out.write(("" if i == 0 else ",\n") + json.dumps(row))
        out.write("\n]}\n")
    return parts


# ---- the service -----------------------------------------------------------------------------


@dataclass
class Chaos:
    data: Path
    contacts: int
    env: dict[str, str]
    args: list[str]
    start_timeout: float = 300.0
    log: Callable[[str], None] = print
    kills: list[str] = field(default_factory=list)
    starts: int = 0
    _seen: int = 0  # the last event-store row counted
    _counts: Counter[str] = field(default_factory=Counter)
    _store: SmsStore | None = None  # the log read for progress on PostgreSQL

    @contextmanager
    def service(self) -> Iterator[Service]:
        """`sftpsms serve` in a subprocess (its log appended to DATA/server.log), waited for until
        its SFTP door listens; stopped on exit unless it was killed."""
        log_path = self.data / "server.log"
        with log_path.open("a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "sftpsms.cli", "serve", "--data-dir", str(self.data), "--sftp-port", "0", *self.args],
                stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, **self.env}, cwd=ROOT,
            )
            self.starts += 1
            try:
                assert process.stdout is not None
                deadline = time.monotonic() + self.start_timeout
                port = None
                while port is None and time.monotonic() < deadline:
                    line = process.stdout.readline()
                    if not line:
                        break
                    if match := READY.search(line):
                        port = int(match.group(1))
                if port is None:
                    raise RunFailed(f"the service did not start (start {self.starts}); see {log_path}")
                yield Service(self.data, port, process, log_path)
            finally:
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        self.log("the service ignored SIGTERM for 60 s: killed")
                        process.kill()
                        process.wait()

    def progress(self) -> tuple[int, int, int]:
        """(batches sealed, messages submitted, statuses reported) so far: counted from the event
        store's table as it grows (SQLite, the default store), a few new rows per look; on a
        PostgreSQL store (SFTPSMS_STORE), from its notification log."""
        if self.env.get("SFTPSMS_STORE") or os.environ.get("SFTPSMS_STORE"):
            return self._progress_from_log()
        path = self.data / "events.db"
        if not path.exists():
            return 0, 0, 0
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                rows = conn.execute(
                    "SELECT topic, COUNT(*), MAX(rowid) FROM stored_events WHERE rowid > ? AND topic IN (?, ?, ?)"
                    " GROUP BY topic",
                    [self._seen, SEALED, SUBMITTED, REPORTED],
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.OperationalError:  # not created yet, or busy
            return self._counts[SEALED], self._counts[SUBMITTED], self._counts[REPORTED]
        for topic, count, last in rows:
            self._counts[topic] += count
            self._seen = max(self._seen, last)
        return self._counts[SEALED], self._counts[SUBMITTED], self._counts[REPORTED]

    def _progress_from_log(self) -> tuple[int, int, int]:
        if self._store is None:
            self._store = open_store(self.data)
        while page := self._store.notifications(self._seen, 5000, topics=[SEALED, SUBMITTED, REPORTED]):
            for notification in page:
                self._counts[notification.topic] += 1
            self._seen = page[-1].id
        return self._counts[SEALED], self._counts[SUBMITTED], self._counts[REPORTED]

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def wait(self, service: Service, done: Callable[[tuple[int, int, int]], bool], timeout: float) -> tuple[int, int, int]:
        deadline = time.monotonic() + timeout
        while True:
            now = self.progress()
            if done(now):
                return now
            if service.process.poll() is not None:
                raise RunFailed(f"the service exited (rc {service.process.returncode}); see {service.log_path}")
            if time.monotonic() > deadline:
                raise RunFailed(f"no progress to the goal within {timeout:.0f} s (at {now}); see {service.log_path}")
            time.sleep(0.05)


def kill_points(rng: random.Random, kills: int, contacts: int) -> list[tuple[str, int]]:
    """Where to kill: about a quarter of the kills in ingest (after that many batches are sealed),
    the rest in dispatch (after that many messages are submitted), in the order they come."""
    batches = max(1, -(-contacts // 1000))
    points: list[tuple[str, int]] = []
    for _ in range(kills):
        if batches > 1 and rng.random() < 0.25:
            points.append(("ingest", rng.randrange(1, batches)))
        else:
            points.append(("dispatch", rng.randrange(1, contacts)))
    return sorted(points, key=lambda point: (point[0] != "ingest", point[1]))


def run(chaos: Chaos, *, kills: int, seed: int, credits: int, upload: Path, timeout: float, settle: float) -> None:
    """Upload, then for each kill point: run until it is reached, SIGKILL, start again. Last, run
    until every message has its final status, and stop with SIGTERM."""
    points = kill_points(random.Random(seed), kills, chaos.contacts)

    def kill_at(service: Service, phase: str, target: int) -> None:
        column = 0 if phase == "ingest" else 1
        at = chaos.wait(service, lambda p: p[column] >= target or p[2] >= chaos.contacts, timeout)
        service.process.send_signal(signal.SIGKILL)
        service.process.wait()
        chaos.kills.append(f"{phase}@{at[column]}")
        chaos.log(f"SIGKILL {len(chaos.kills)} in {phase} at {at[column]} (sealed, submitted, reported = {at})")

    with chaos.service() as service:
        service.add_account(ACCOUNT, credits=credits)
        with service.paramiko(ACCOUNT) as sftp:
            remote = sftp.open(f"Send_SMS/{NAME}", "wb")
            remote.set_pipelined(True)
            with upload.open("rb") as local:
                while chunk := local.read(1 << 18):
                    remote.write(chunk)
            remote.close()
        chaos.log(f"uploaded {NAME}: {chaos.contacts} contacts, {credits} parts")
        if points:
            kill_at(service, *points[0])
    for point in points[1:]:
        with chaos.service() as service:
            kill_at(service, *point)
    with chaos.service() as service:
        at = chaos.wait(service, lambda p: p[1] >= chaos.contacts, timeout)
        # Then until every message has its status, or nothing has changed for `settle` seconds
        # (what is missing then stays missing: the proof will say so).
        last, since = at, time.monotonic()

        def settled(now: tuple[int, int, int]) -> bool:
            nonlocal last, since
            if now != last:
                last, since = now, time.monotonic()
            return now[2] >= chaos.contacts or time.monotonic() - since > settle

        at = chaos.wait(service, settled, timeout)
        chaos.log(f"done (sealed, submitted, reported = {at}); a few seconds more for strays")
        time.sleep(3)
        if service.process.poll() is not None:
            raise RunFailed(f"the service exited (rc {service.process.returncode})")


# ---- the proof -------------------------------------------------------------------------------


def _states(store: SmsStore, topics: list[str]) -> Iterator[tuple[str, UUID, dict[str, Any]]]:
    """(topic, originator id, event state) of every event of `topics`, in log order."""
    decode = store.mapper.transcoder.decode
    position = 0
    while True:
        page = store.notifications(position, 20_000, topics=topics)
        if not page:
            return
        for notification in page:
            if store.writes_batch_rows:
                state = decode(notification.state)
            else:
                state = dict(vars(store.mapper.to_domain_event(notification)))
            yield notification.topic, UUID(str(notification.originator_id)), state
        position = page[-1].id


@dataclass
class Totals:
    contacts: int
    credits_added: int = 0
    queued: Counter[int] = field(default_factory=Counter)  # contact index → MessageQueued
    submitted: Counter[str] = field(default_factory=Counter)  # message id → MessageSubmitted
    parts_sent: int = 0
    expired_unsent: int = 0  # MessageExpired (End passed before sending: none here)
    accepted: Counter[str] = field(default_factory=Counter)  # message id → simulator journal lines
    gateway_ids_match: int = 0
    resubmitted: int = 0  # re-submissions the simulator recognised (after kills) and did not send
    reported: Counter[str] = field(default_factory=Counter)  # message id → DeliveryReported
    statuses: Counter[str] = field(default_factory=Counter)
    reserved: int = 0
    refunded: int = 0
    balance: int = 0

    def problems(self) -> list[str]:
        found: list[str] = []
        expected = set(range(self.contacts))

        def once(what: str, counts: Counter[Any], wanted: set[Any]) -> None:
            missing, extra = wanted - set(counts), set(counts) - wanted
            twice = sum(1 for count in counts.values() if count > 1)
            if missing or extra or twice:
                found.append(f"{what}: {len(missing)} missing, {twice} more than once, {len(extra)} unexpected")

        once("queued", self.queued, expected)
        messages = set(self.submitted) | set(self.reported) | set(self.accepted)
        once("submitted", self.submitted, messages)
        if len(self.submitted) != self.contacts:
            found.append(f"submitted: {len(self.submitted)} messages for {self.contacts} contacts")
        once("simulator accepted", self.accepted, set(self.submitted))
        once("final status", self.reported, set(self.submitted))
        if self.gateway_ids_match != len(self.submitted):
            found.append(f"gateway ids: {len(self.submitted) - self.gateway_ids_match} differ from the simulator's")
        used = self.reserved - self.refunded
        if used != self.parts_sent:
            found.append(f"credits: used {used} (reserved {self.reserved} - refunded {self.refunded}) != parts sent {self.parts_sent}")
        if self.balance != self.credits_added - used:
            found.append(f"balance: {self.balance} != added {self.credits_added} - used {used}")
        return found

    def lines(self) -> list[str]:
        return [
            f"contacts            {self.contacts}",
            f"queued              {len(self.queued)} contacts, {sum(self.queued.values())} MessageQueued",
            f"submitted           {len(self.submitted)} messages, {sum(self.submitted.values())} MessageSubmitted, "
            f"{self.parts_sent} parts",
            f"simulator accepted  {len(self.accepted)} message ids, {sum(self.accepted.values())} journal lines "
            f"({self.resubmitted} re-submissions after kills recognised, not sent again)",
            f"final status        {len(self.reported)} messages, {sum(self.reported.values())} DeliveryReported "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.statuses.items()))})",
            f"credits             added {self.credits_added}, reserved {self.reserved}, refunded {self.refunded}, "
            f"used {self.reserved - self.refunded}, parts sent {self.parts_sent}, balance {self.balance}",
        ]


def prove(data: Path, contacts: int) -> Totals:
    """The totals from the events and the simulator's journal of a finished run."""
    totals = Totals(contacts)
    store = open_store(data)
    try:
        account = store.account(ACCOUNT)
        totals.balance = account.balance
        account_key = account.id
        file_of: dict[UUID, UUID] = {}  # dispatch log → file
        gateway_id_of: dict[str, str] = {}
        for topic, originator, state in _states(store, [QUEUED, STARTED, SUBMITTED, EXPIRED, REPORTED]):
            if topic == QUEUED:
                totals.queued[int(state["index"])] += 1
            elif topic == STARTED:
                file_of[originator] = UUID(state["file_id"])
            elif topic == SUBMITTED:
                message = str(message_id(file_of[originator], int(state["index"])))
                totals.submitted[message] += 1
                totals.parts_sent += int(state["parts"])
                gateway_id_of[message] = state["gateway_id"]
            elif topic == EXPIRED:
                totals.expired_unsent += 1
            else:
                totals.reported[state["message_id"]] += 1
                totals.statuses[state["status"]] += 1
        for topic, originator, state in _states(store, [ADDED, RESERVED, REFUNDED]):
            if originator != account_key:
                continue
            amount = int(state["amount"])
            if topic == ADDED:
                totals.credits_added += amount
            elif topic == RESERVED:
                totals.reserved += amount
            else:
                totals.refunded += amount
    finally:
        store.close()
    journal = Settings.from_env(data_dir=data).simulator_dir  # the node's own folder on PostgreSQL
    for line in (journal / "accepted.log").read_text().splitlines():
        fields = line.split(" ")
        if len(fields) >= 2:
            totals.accepted[fields[0]] += 1
            if gateway_id_of.get(fields[0]) == fields[1]:
                totals.gateway_ids_match += 1
    resubmitted = journal / "resubmitted.log"
    if resubmitted.exists():
        totals.resubmitted = len(resubmitted.read_text().splitlines())
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs at random moments (default 10)")
    parser.add_argument("--contacts", type=int, default=200_000, help="contacts in the file (default 200 000)")
    parser.add_argument("--seed", type=int, default=1, help="chooses the kill moments and the simulator's receipts")
    parser.add_argument("--send-rate", type=float, default=2000.0, help="SMS parts per second (default 2000)")
    parser.add_argument("--data-dir", type=Path, help="keep the run here (default: a temporary directory)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for each step (default 1800)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds without progress after which missing statuses count as lost (default 30)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        data = args.data_dir or Path(scratch) / "data"
        data.mkdir(parents=True, exist_ok=True)
        upload = Path(scratch) / NAME
        credits = generate(upload, args.contacts)
        env = {
            "SFTPSMS_ACCOUNT_RATE": str(args.send_rate),
            "SFTPSMS_SIMULATOR_SEED": str(args.seed),
            "SFTPSMS_SIMULATOR_DELIVERY_DELAY": "1.0",  # receipts outstanding at every kill
            "SFTPSMS_SIMULATOR_REMEMBER": str(max(100_000, 2 * args.contacts)),  # journal kept whole for the proof
            "SFTPSMS_SWEEP_INTERVAL": "0.5",
        }
        chaos = Chaos(data, args.contacts, env, ["--send-rate", str(args.send_rate)])
        started = time.monotonic()
        print(f"chaos: {args.contacts} contacts, {args.kills} kills, seed {args.seed}, data {data}", flush=True)
        try:
            run(chaos, kills=args.kills, seed=args.seed, credits=credits, upload=upload, timeout=args.timeout,
                settle=args.settle)
        except RunFailed as error:
            print(f"RUN FAILED: {error}", flush=True)
            return 2
        finally:
            chaos.close()
        elapsed = time.monotonic() - started
        totals = prove(data, args.contacts)
        print(f"kills               {len(chaos.kills)} ({', '.join(chaos.kills)}), starts {chaos.starts}, {elapsed:.0f} s")
        for line in totals.lines():
            print(line)
        problems = totals.problems()
        for problem in problems:
            print(f"MISMATCH: {problem}")
        print("OK: every contact queued once, every message submitted once and final once, credits exact"
              if not problems else f"FAILED: {len(problems)} mismatches")
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
