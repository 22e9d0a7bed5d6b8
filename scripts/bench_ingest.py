"""The ingest benchmark behind scripts/bench_ingest (see there)."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
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


# --- --mix: the numbers and messages customers really send ---------------------------------------
#
# Other countries' mobiles (libphonenumber's example mobile of each region, last digits varied):
# neighbours, where the traffic goes, and a few with multi-region codes or carrier-code prefixes.
FOREIGN_MOBILES = [
    ("44", "7400123456"),  # GB
    ("49", "15123456789"),  # DE
    ("234", "8021234567"),  # NG
    ("254", "712123456"),  # KE
    ("91", "8123456789"),  # IN
    ("1", "2015550123"),  # US
    ("33", "612345678"),  # FR
    ("61", "412345678"),  # AU
    ("55", "11961234567"),  # BR
    ("263", "712345678"),  # ZW
    ("267", "71123456"),  # BW
    ("264", "811234567"),  # NA
    ("258", "821234567"),  # MZ
    ("39", "3123456789"),  # IT
    ("7", "9123456789"),  # RU
    ("54", "91123456789"),  # AR
]
# A few contacts write their own message: plain, GSM letters outside ASCII, two parts.
MESSAGES = [
    "Your parcel is ready for collection at the Rosebank branch.",
    "Bonjour Zoé, votre rendez-vous est confirmé pour demain à 10h.",
    "Reminder: " + "your account statement is ready, please log in to view it. " * 3,
]
ROUTE_PREFIXES = ("1", "9995")  # `route add`ed by the benchmark; 1 is NANP, 9995 no country at all
INVALID = ["12", "abc", "0111111111", "27211234567", "+27 83 12", "2783123456789012", "083-ABC-4567"]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def mix_contact(rng: random.Random, i: int) -> dict[str, object]:
    """One contact of the realistic mix (see --mix): its number in one of the usual spellings, a
    per-contact message for one in ten, template values for the others."""
    kind = rng.random()
    mobile = "8" + rng.choice("1234") + _digits(rng, 7)  # a ZA mobile after the 27
    if kind < 0.20:
        msisdn = "27" + mobile  # the account's own country code, as the default benchmark
    elif kind < 0.35:
        msisdn = "0" + mobile  # national
    elif kind < 0.40:
        msisdn = f"0{mobile[:2]} {mobile[2:5]} {mobile[5:]}"  # national, spaced
    elif kind < 0.50:
        msisdn = f"+27 {mobile[:2]} {mobile[2:5]} {mobile[5:]}"
    elif kind < 0.55:
        msisdn = "0027" + mobile
    elif kind < 0.75:
        code, example = rng.choice(FOREIGN_MOBILES)
        national = example[:-4] + _digits(rng, 4)
        msisdn = rng.choice(
            [f"+{code} {national[:3]} {national[3:]}", f"+{code}{national}", f"00{code}{national}", code + national]
        )
    elif kind < 0.97:
        prefix = rng.choice(ROUTE_PREFIXES)
        msisdn = prefix + _digits(rng, 11 - len(prefix))
    else:
        msisdn = rng.choice(INVALID)
    row: dict[str, object] = {"msisdn": msisdn, "customerId": f"C{i:08d}"}
    if rng.random() < 0.1:
        row["message"] = rng.choice(MESSAGES)
    else:
        row["values"] = {"value1": rng.choice(["Thandi", "Pieter", "Zoé", "Sipho"]), "value2": f"AC{i:09d}"}
    return row


def route_contact(rng: random.Random, i: int) -> dict[str, object]:
    """Route-prefix numbers only: `1` and ten digits, with `route add 1`."""
    return {"msisdn": "1" + _digits(rng, 10), "customerId": f"C{i:08d}", "values": {"value1": "Thandi", "value2": f"AC{i:09d}"}}


def generate_rows(path: Path, contacts: int, make_row: object) -> None:
    rng = random.Random(9)
    assert callable(make_row)
    with path.open("w") as out:
        out.write('{"Version": 7, "Message_Template": ' + json.dumps(TEMPLATE) + ', "Contacts": [\n')
        for i in range(contacts):
            out.write(("" if i == 0 else ",\n") + json.dumps(make_row(rng, i), ensure_ascii=False))
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


@dataclass(frozen=True)
class Ingest:
    """One measured ingest: an upload of `contacts` over SFTP to a real server, close → FileCompleted."""

    contacts: int
    size_mb: float
    seconds: float  # upload close → FileCompleted
    pickup_ms: float  # upload close → FileReceived
    state_size: int  # bytes of a stored MessageQueued state
    rss_mb: float  # the server's peak
    workers: int  # pass-one worker processes seen
    worker_rss_mb: float  # their peaks, summed

    @property
    def rate(self) -> float:
        return self.contacts / self.seconds


def measure_ingest(
    contacts: int, scratch: Path, *, store: str | None = None, profile: Path | None = None, gil: bool = False
) -> Ingest:
    """Generate a file of `contacts`, upload it to a server on a data directory in `scratch`
    whose event store is `store` (a PostgreSQL URL; default SQLite in the data directory), and
    time it from the upload's close to FileCompleted."""
    scratch.mkdir(parents=True, exist_ok=True)
    upload = scratch / "upload.json"
    print(f"generating {contacts:,} contacts ...", flush=True)
    generate(upload, contacts)
    size_mb = upload.stat().st_size / 1e6
    data_dir = scratch / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    # A slow send rate keeps the dispatcher from competing with ingest for the CPU.
    # The store by SFTPSMS_STORE, for the server and for this process's look at it (add_account).
    saved = os.environ.get("SFTPSMS_STORE")
    os.environ["SFTPSMS_STORE"] = store or ""
    try:
        return _ingest(contacts, upload, size_mb, data_dir, profile, gil)
    finally:
        if saved is None:
            del os.environ["SFTPSMS_STORE"]
        else:
            os.environ["SFTPSMS_STORE"] = saved


def _ingest(contacts: int, upload: Path, size_mb: float, data_dir: Path, profile: Path | None, gil: bool) -> Ingest:
    # A slow send rate keeps the dispatcher from competing with ingest for the CPU.
    with running_service(data_dir, "--send-rate", "1") as service:
        service.add_account("bench", credits=contacts * 2)
        profiler = None
        if profile is not None:
            sampling = ["--gil"] if gil else ["--subprocesses", "--idle"]
            profiler = subprocess.Popen(
                ["py-spy", "record", "--pid", str(service.process.pid), "--format", "raw",
                 *sampling, "-r", "200", "-o", str(profile)],
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
        events_store = service.store()
        try:
            file = events_store.file(uuid.UUID(report["file_id"]))
            events = {type(e).__name__: e for e in events_store.events.get(file.id)}
            received = events["FileReceived"].timestamp
            completed = events["FileCompleted"].timestamp
            sample = next(n for n in events_store.notifications(0, 5000) if n.topic.endswith("MessageQueued"))
        finally:
            events_store.close()
    assert folder == "Processed", report
    assert report["messages_queued"] == contacts, report
    return Ingest(
        contacts=contacts,
        size_mb=size_mb,
        seconds=(completed - closed_wall).total_seconds(),
        pickup_ms=(received - closed_wall).total_seconds() * 1000,
        state_size=len(sample.state),
        rss_mb=rss,
        workers=len(workers.peaks),
        worker_rss_mb=worker_rss,
    )


MIX_CASES = (
    ("own-country", "numbers in the account's own country code, 2782... (the default run's file)"),
    ("mix", "national, +CC, 00CC, other countries' mobiles, route prefixes, messages, a few invalid"),
    ("route-only", "1 and ten digits, with `route add 1`"),
)


def pass_one_seconds(log: str, name: str) -> tuple[int, float]:
    """The contacts and pass 1 seconds of the server's `phases:` line for the file `name`."""
    for line in log.splitlines():
        if "phases:" in line and name in line:
            match = re.search(r"contacts=(\d+) phases: .*pass1=([\d.]+)", line)
            if match:
                return int(match.group(1)), float(match.group(2))
    raise AssertionError(f"no phases line for {name}")


def run_mix(args: argparse.Namespace, scratch: Path) -> None:
    """--mix: the own-country file, the realistic mix and route-prefix numbers only, through one
    server, one after the other (best of --repeat each), with pass 1 from the server's log."""
    files = {}
    for case, _ in MIX_CASES:
        path = scratch / f"{case}.json"
        print(f"generating {args.contacts:,} contacts ({case}) ...", flush=True)
        if case == "own-country":
            generate(path, args.contacts)
        else:
            generate_rows(path, args.contacts, mix_contact if case == "mix" else route_contact)
        files[case] = path
    best: dict[str, float] = {}
    outcome: dict[str, str] = {}
    with running_service(scratch / "data", "--send-rate", "1") as service:
        service.add_account("bench", credits=args.contacts * 4 * args.repeat * len(files))
        store = open_store(service.data_dir)
        for prefix in ROUTE_PREFIXES:
            store.add_route(prefix)
        store.close()
        profiler = None
        if args.profile is not None:
            sampling = ["--gil"] if args.gil else ["--subprocesses", "--idle"]
            profiler = subprocess.Popen(
                ["py-spy", "record", "--pid", str(service.process.pid), "--format", "raw",
                 *sampling, "-r", "200", "-o", str(args.profile)],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(1)
        with service.paramiko("bench") as sftp:
            for attempt in range(args.repeat):
                for case, path in files.items():
                    name = f"{case}-{attempt}.json"
                    sftp.put(str(path), f"Send_SMS/{name}", confirm=False)  # it is processed at once
                    folder, report = service.wait_report("bench", name, timeout=3600)
                    assert folder == "Processed", report
                    contacts, seconds = pass_one_seconds(service.log(), name)
                    assert contacts == args.contacts, (contacts, report)
                    best[case] = min(best.get(case, seconds), seconds)
                    outcome[case] = report["detail"]
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait()
    own = best["own-country"]
    print(f"pass 1 of {args.contacts:,} contacts (server's phases: line, best of {args.repeat}):")
    for case, what in MIX_CASES:
        seconds = best[case]
        print(
            f"  {case:12s} {seconds:6.2f} s = {args.contacts / seconds:9,.0f} contacts/s  "
            f"{seconds / own:4.1f}x own-country   {what}\n  {'':12s} {outcome[case]}"
        )
    print("target: every case within 2.0x of own-country")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument(
        "--mix",
        action="store_true",
        help="pass 1 of a realistic mix of numbers and of route-prefix numbers beside the own-country file",
    )
    parser.add_argument("--repeat", type=int, default=1, help="with --mix: upload each file N times, keep the best")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--profile", type=Path, help="record the server with py-spy (collapsed stacks) into this file")
    parser.add_argument(
        "--gil", action="store_true", help="with --profile: only the server's thread holding the GIL (not the workers)"
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    if args.mix:
        try:
            run_mix(args, scratch)
        finally:
            if args.keep:
                print(f"data kept in {scratch}")
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        return
    # The machine is shared: the raw rate is measured just before and just after the ingest, with
    # rows of the size the ingest will store (the middle contact's MessageQueued), and the ratio
    # uses their mean.
    raw_before = raw_sqlite_rate(args.contacts, expected_state_size(args.contacts), scratch)
    try:
        ingest = measure_ingest(args.contacts, scratch, profile=args.profile, gil=args.gil)
        raw_after = raw_sqlite_rate(args.contacts, ingest.state_size, scratch)
        raw = (raw_before + raw_after) / 2
        print(f"contacts:                 {args.contacts:,} ({ingest.size_mb:.1f} MB)")
        print(f"pickup (close → FileReceived): {ingest.pickup_ms:.1f} ms   (target < 50 ms)")
        print(f"ingest (close → FileCompleted): {ingest.seconds:.2f} s = {ingest.rate:,.0f} contacts/s")
        print(
            f"raw sqlite3, same rows ({ingest.state_size} B) and index, 1000/txn: {raw:,.0f} rows/s "
            f"(before {raw_before:,.0f}, after {raw_after:,.0f})"
        )
        print(f"ingest / raw:             {100 * ingest.rate / raw:.1f} %   (target ≥ 30 %)")
        print(
            f"peak RSS:                 server {ingest.rss_mb:.0f} MB + {ingest.workers} worker process(es) "
            f"{ingest.worker_rss_mb:.0f} MB = {ingest.rss_mb + ingest.worker_rss_mb:.0f} MB   (target < 200 MB at 1M contacts)"
        )
    finally:
        if args.keep:
            print(f"data kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
