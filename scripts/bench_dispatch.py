"""The dispatch benchmark behind scripts/bench_dispatch (see there).

Everything runs through the real service (`sftpsms serve` in its own process): files uploaded over
SFTP, ingested, dispatched to the simulator, receipts recorded. Figures come from the events
(MessageSubmitted.submitted_at), read from the event store after the run.

1. Fairness and rates: three accounts with different configured rates get one file each (together
   --messages, default 200 000), all with the same Start so they begin in the same second; the
   achieved rate of each over a --window (default 60 s) is compared with its configured rate.
2. Maximum rate: one account without a limit of its own sends --burst messages (default 300 000, long enough that the delivery receipts must keep up)
   to the simulator from its Start on; messages/s from Start to the last MessageSubmitted.
3. Receipt → webhook latency: scripts/bench_webhooks at 1 000 events/s (DeliveryReported events
   through the event writer, the webhook sender POSTing to a receiver in another process).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore.store import open_store  # noqa: E402
from tests.service import Service, running_service  # noqa: E402

SUBMITTED = "eventstore.domain:DispatchLog.MessageSubmitted"
STARTED = "eventstore.domain:DispatchLog.DispatchStarted"
REPORTED = "eventstore.domain:DeliveryLog.DeliveryReported"


def generate(path: Path, contacts: int, start: datetime, offset: int) -> None:
    """A version-7 file of single-part messages with a Start (to the second)."""
    with path.open("w") as out:
        header = {"Version": 7, "Start": start.strftime("%Y-%m-%d %H:%M:%S"), "Message_Template": "Code @@value1@@"}
        out.write(json.dumps(header)[:-1] + ', "Contacts": [\n')
        for i in range(contacts):
            row = {"msisdn": f"2783{(offset + i) % 10_000_000:07d}", "values": {"value1": str(100000 + i)}}
            out.write(("" if i == 0 else ",\n") + json.dumps(row))
        out.write("\n]}\n")


def upload(service: Service, account: str, path: Path) -> None:
    with service.paramiko(account) as sftp:
        remote = sftp.open(f"Send_SMS/{path.name}", "wb")
        remote.set_pipelined(True)
        with path.open("rb") as local:
            while chunk := local.read(1 << 18):
                remote.write(chunk)
        remote.close()


def submissions(data_dir: Path) -> dict[str, list[datetime]]:
    """submitted_at of every MessageSubmitted, by account, sorted."""
    store = open_store(data_dir)
    try:
        account_of: dict[object, str] = {}
        times: dict[str, list[datetime]] = defaultdict(list)
        position = 0
        while True:
            page = store.notifications(position, 10_000, topics=[STARTED, SUBMITTED])
            if not page:
                break
            for notification in page:
                event = store.mapper.to_domain_event(notification)
                if notification.topic == STARTED:
                    account_of[event.originator_id] = event.account  # type: ignore[attr-defined]
                else:
                    times[account_of[event.originator_id]].append(
                        datetime.fromisoformat(event.submitted_at)  # type: ignore[attr-defined]
                    )
            position = page[-1].id
        for values in times.values():
            values.sort()
        return times
    finally:
        store.close()


def receipts(data_dir: Path) -> list[datetime]:
    """When each DeliveryReported event was recorded (its timestamp), in log order."""
    store = open_store(data_dir)
    try:
        times: list[datetime] = []
        position = 0
        while page := store.notifications(position, 10_000, topics=[REPORTED]):
            times.extend(store.mapper.to_domain_event(n).timestamp for n in page)  # type: ignore[attr-defined]
            position = page[-1].id
        return times
    finally:
        store.close()


def wait_for(data_dir: Path, count: int, timeout: float) -> dict[str, list[datetime]]:
    deadline = time.monotonic() + timeout
    while True:
        found = submissions(data_dir)
        done = sum(len(v) for v in found.values())
        print(f"  {done:,} of {count:,} submitted", flush=True)
        if done >= count or time.monotonic() > deadline:
            return found
        time.sleep(5)


def gc_pauses(data_dir: Path) -> str:
    """The server's logged garbage-collection pauses (sftpsms.gcwatch), in one line."""
    log = data_dir / "server.log"
    pauses = [
        float(line.split(" paused the process ")[1].split(" ms")[0])
        for line in (log.read_text().splitlines() if log.exists() else [])
        if "garbage collection" in line
    ]
    if not pauses:
        return "  garbage-collection pauses >= 50 ms: none"
    return f"  garbage-collection pauses >= 50 ms: {len(pauses)}, longest {max(pauses):.0f} ms, {sum(pauses) / 1000:.1f} s in all"


def fairness(scratch: Path, total: int, window: float, lead: float) -> None:
    rates = {"alpha": 1200.0, "beta": 800.0, "gamma": 400.0}
    weight = sum(rates.values())
    counts = {name: int(total * rate / weight) for name, rate in rates.items()}
    counts["alpha"] += total - sum(counts.values())
    print(f"1. fairness: {total:,} messages, accounts {', '.join(f'{n} {r:g}/s ({counts[n]:,})' for n, r in rates.items())}")
    start = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    data = scratch / "fair"
    with running_service(data, "--send-rate", "100000") as service:
        for name, rate in rates.items():
            service.add_account(name, credits=counts[name] * 2)
            service.cli("account", "rate", name, f"{rate:g}")
        for offset, (name, count) in enumerate(counts.items()):
            path = scratch / f"{name}.json"
            generate(path, count, start, offset * 1_000_000)
            upload(service, name, path)
        print(f"  uploaded; every file starts at {start:%H:%M:%S}", flush=True)
        for name in rates:
            folder, report = service.wait_report(name, f"{name}.json", timeout=600)
            assert folder == "Processed", report
        remaining = (start - datetime.now(UTC)).total_seconds()
        if remaining < 0:
            print(f"  warning: ingest finished {-remaining:.1f} s after Start; raise --lead", flush=True)
        time.sleep(max(0.0, remaining) + window + 3)
        found = submissions(data)
    opened = start + timedelta(seconds=1)  # the first second holds each bucket's initial burst
    closed = opened + timedelta(seconds=window)
    first = min(v[0] for v in found.values())
    print(f"  first message {1000 * (first - start).total_seconds():+.0f} ms from Start")
    print(f"  {'account':8} {'configured':>10} {'achieved':>10} {'error':>8}   (window {window:g} s; target within 1 %)")
    for name, rate in rates.items():
        sent = sum(1 for t in found[name] if opened <= t < closed)
        achieved = sent / window
        print(f"  {name:8} {rate:>10.1f} {achieved:>10.1f} {100 * (achieved - rate) / rate:>+7.2f} %")
    print("  each second of the window (alpha beta gamma):")
    for second in range(int(window)):
        low, high = opened + timedelta(seconds=second), opened + timedelta(seconds=second + 1)
        counts_now = [sum(1 for t in found[name] if low <= t < high) for name in rates]
        print(f"  {second:3d}: " + " ".join(f"{c:5d}" for c in counts_now), end="\n" if second % 4 == 3 else "  ")
    print()
    print(gc_pauses(data))


def maximum(scratch: Path, burst: int, lead: float, profile: Path | None = None, quiet_hours: str | None = None) -> None:
    print(f"2. maximum rate to the simulator: {burst:,} messages, no account or service limit in the way"
          + (f"; quiet hours {quiet_hours} (Johannesburg time)" if quiet_hours else ""))
    start = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    data = scratch / "max"
    with running_service(data, "--send-rate", "1000000") as service:
        service.add_account("bulk", credits=burst * 2)
        service.cli("account", "rate", "bulk", "1000000")
        if quiet_hours:
            done = service.cli("account", "quiet-hours", "bulk", quiet_hours)
            assert done.returncode == 0, done.stderr
        path = scratch / "bulk.json"
        generate(path, burst, start, 0)
        upload(service, "bulk", path)
        folder, report = service.wait_report("bulk", "bulk.json", timeout=600)
        assert folder == "Processed", report
        if datetime.now(UTC) > start:
            print("  warning: ingest finished after Start; raise --lead", flush=True)
        time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
        profiler = None
        if profile is not None:  # py-spy on PATH; collapsed stacks of the server while it holds the GIL
            profiler = subprocess.Popen(
                ["py-spy", "record", "--pid", str(service.process.pid), "--format", "raw", "--gil",
                 "-r", "200", "-o", str(profile)],
                stdout=subprocess.DEVNULL,
            )
        found = wait_for(data, burst, timeout=600)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait()
        deadline = time.monotonic() + 300
        while len(recorded := receipts(data)) < burst and time.monotonic() < deadline:
            time.sleep(1)
    times = found["bulk"]
    elapsed = (times[-1] - start).total_seconds()
    print(f"  {len(times):,} submitted in {elapsed:.2f} s from Start = {len(times) / elapsed:,.0f} msg/s   (target ≥ 5 000)")
    seconds: defaultdict[int, int] = defaultdict(int)
    for t in times:
        seconds[int((t - start).total_seconds())] += 1
    busiest = max(seconds.values())
    print(f"  busiest second: {busiest:,} messages; each second from Start:")
    print("  " + " ".join(str(seconds.get(second, 0)) for second in range(max(seconds) + 1)))
    print(gc_pauses(data))
    if recorded:  # the simulator answers each message after 0.25-0.75 s
        lag = (max(recorded) - times[-1]).total_seconds()
        print(f"  delivery receipts recorded: {len(recorded):,} of {burst:,}, the last {lag:.1f} s after the last submission")


def webhooks(rate: int, seconds: int) -> None:
    print(f"3. receipt → webhook latency at {rate:,} events/s for {seconds} s (scripts/bench_webhooks)", flush=True)
    script = Path(__file__).resolve().parent / "bench_webhooks.py"
    subprocess.run([sys.executable, str(script), "--rate", str(rate), "--seconds", str(seconds)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000, help="messages across the three accounts")
    parser.add_argument("--window", type=float, default=60.0, help="seconds over which rates are measured")
    parser.add_argument("--burst", type=int, default=300_000, help="messages for the maximum-rate run (long enough that receipts must keep up)")
    parser.add_argument("--lead", type=float, default=40.0, help="seconds from upload to Start (ingest must finish)")
    parser.add_argument("--only", choices=["fairness", "maximum", "webhooks"], help="run one part")
    parser.add_argument("--profile", type=Path, help="record the maximum-rate run with py-spy into this file")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument(
        "--quiet-hours", metavar="WINDOW",
        help="set the maximum-rate account's quiet hours (e.g. one outside the present Johannesburg time: "
        "the cost of the check when nothing is held)",
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    try:
        if args.only in (None, "fairness"):
            fairness(scratch, args.messages, args.window, args.lead)
        if args.only in (None, "maximum"):
            maximum(scratch, args.burst, args.lead, args.profile, args.quiet_hours)
        if args.only in (None, "webhooks"):
            webhooks(1000, 10)
    finally:
        if args.keep:
            print(f"data kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
