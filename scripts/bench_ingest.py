"""The ingest benchmark behind scripts/bench_ingest (see there)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore.store import open_store  # noqa: E402
from tests.service import running_service  # noqa: E402

TEMPLATE = "Hi @@value1@@, your statement for account @@value2@@ is ready. Reply STOP to opt out."


def generate(path: Path, contacts: int) -> None:
    with path.open("w") as out:
        out.write('{"Version": 7, "Message_Template": ' + json.dumps(TEMPLATE) + ', "Contacts": [\n')
        for i in range(contacts):
            row = {
                "msisdn": f"2783{i % 10_000_000:07d}",
                "customerId": f"C{i:08d}",
                "values": {"value1": "Thandi", "value2": f"AC{i:09d}"},
            }
            out.write(("" if i == 0 else ",\n") + json.dumps(row))
        out.write("\n]}\n")


def expected_state_size(contacts: int) -> int:
    """The stored size of the middle contact's MessageQueued event (the same fields, in the same
    order, as eventstore.contact_rows writes them)."""
    i = contacts // 2
    text = TEMPLATE.replace("@@value1@@", "Thandi").replace("@@value2@@", f"AC{i:09d}")
    state = {
        "timestamp": datetime.now(UTC),
        "index": i,
        "msisdn": f"2783{i % 10_000_000:07d}",
        "customer_id": f"C{i:08d}",
        "text": text,
        "parts": 1,
    }
    return len(orjson.dumps(state))


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # gone meanwhile
        pass
    return float("nan")


class WorkerRss(threading.Thread):
    """The peak RSS of every process the server starts (pass-one workers), seen every 20 ms while
    they live: the service's memory is the server's plus theirs."""

    def __init__(self, server: int) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peaks: dict[int, float] = {}
        self.done = threading.Event()

    def cmdline(self, pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    def children(self, pid: int) -> list[int]:
        found = []
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                found += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
        return found

    def run(self) -> None:
        server = self.cmdline(self.server)
        while not self.done.wait(0.02):
            pending = self.children(self.server)
            while pending:
                pid = pending.pop()
                if self.cmdline(pid) == server:
                    continue  # forked but not yet exec'ed: the server's own pages, shared
                peak = peak_rss_mb(pid)
                if peak == peak:  # not NaN
                    self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak)
                pending += self.children(pid)

    def total_mb(self) -> float:
        self.done.set()
        self.join()
        return sum(self.peaks.values())


def raw_sqlite_rate(rows: int, state_size: int, directory: Path) -> float:
    """Plain sqlite3: the event store's table and index, WAL like eventsourcing, 1000 rows a batch."""
    path = directory / "raw.db"
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, topic TEXT, "
        "state BLOB, PRIMARY KEY (originator_id, originator_version))"
    )
    topic = "eventstore.domain:ContactBatch.MessageQueued"
    state = b"x" * state_size
    started = time.perf_counter()
    for batch in range(0, rows, 1000):
        originator = uuid.uuid4().hex
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO stored_events VALUES (?,?,?,?)",
            [(originator, version, topic, state) for version in range(min(1000, rows - batch))],
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--profile", type=Path, help="record the server with py-spy (collapsed stacks) into this file")
    parser.add_argument(
        "--gil", action="store_true", help="with --profile: only the server's thread holding the GIL (not the workers)"
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    # The machine is shared: the raw rate is measured just before and just after the ingest, with
    # rows of the size the ingest will store (the middle contact's MessageQueued), and the ratio
    # uses their mean.
    raw_before = raw_sqlite_rate(args.contacts, expected_state_size(args.contacts), scratch)
    upload = scratch / "upload.json"
    print(f"generating {args.contacts:,} contacts ...", flush=True)
    generate(upload, args.contacts)
    size_mb = upload.stat().st_size / 1e6
    try:
        # A slow send rate keeps the dispatcher from competing with ingest for the CPU.
        with running_service(scratch / "data", "--send-rate", "1") as service:
            service.add_account("bench", credits=args.contacts * 2)
            profiler = None
            if args.profile is not None:
                sampling = ["--gil"] if args.gil else ["--subprocesses", "--idle"]
                profiler = subprocess.Popen(
                    ["py-spy", "record", "--pid", str(service.process.pid), "--format", "raw",
                     *sampling, "-r", "200", "-o", str(args.profile)],
                    stdout=subprocess.DEVNULL,
                )
                time.sleep(1)
            workers = WorkerRss(service.process.pid)
            workers.start()
            with service.paramiko("bench") as sftp:
                started = time.perf_counter()
                remote = sftp.open("Send_SMS/bench.json", "wb")
                remote.set_pipelined(True)
                with upload.open("rb") as local:
                    while chunk := local.read(1 << 18):
                        remote.write(chunk)
                uploaded = time.perf_counter()
                closed_wall = datetime.now().astimezone()
                remote.close()
                close_returned = time.perf_counter()
            print(
                f"uploaded {size_mb:.1f} MB in {uploaded - started:.2f} s; "
                f"close acknowledged after {1000 * (close_returned - uploaded):.1f} ms",
                flush=True,
            )
            folder, report = service.wait_report("bench", "bench.json", timeout=3600)
            rss = peak_rss_mb(service.process.pid)
            worker_rss = workers.total_mb()
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait()
            store = open_store(service.data_dir)
            file = store.file(uuid.UUID(report["file_id"]))
            events = {type(e).__name__: e for e in store.events.get(file.id)}
            received = events["FileReceived"].timestamp
            completed = events["FileCompleted"].timestamp
            sample = next(
                n for n in store.notifications(0, 5000) if n.topic.endswith("MessageQueued")
            )
            store.close()
        assert folder == "Processed", report
        assert report["messages_queued"] == args.contacts, report
        pickup_ms = (received - closed_wall).total_seconds() * 1000
        ingest_s = (completed - closed_wall).total_seconds()
        rate = args.contacts / ingest_s
        raw_after = raw_sqlite_rate(args.contacts, len(sample.state), scratch)
        raw = (raw_before + raw_after) / 2
        print(f"contacts:                 {args.contacts:,} ({size_mb:.1f} MB)")
        print(f"pickup (close → FileReceived): {pickup_ms:.1f} ms   (target < 50 ms)")
        print(f"ingest (close → FileCompleted): {ingest_s:.2f} s = {rate:,.0f} contacts/s")
        print(
            f"raw sqlite3, same rows ({len(sample.state)} B) and index, 1000/txn: {raw:,.0f} rows/s "
            f"(before {raw_before:,.0f}, after {raw_after:,.0f})"
        )
        print(f"ingest / raw:             {100 * rate / raw:.1f} %   (target ≥ 30 %)")
        print(
            f"peak RSS:                 server {rss:.0f} MB + {len(workers.peaks)} worker process(es) "
            f"{worker_rss:.0f} MB = {rss + worker_rss:.0f} MB   (target < 200 MB at 1M contacts)"
        )
    finally:
        if args.keep:
            print(f"data kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
