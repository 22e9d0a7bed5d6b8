"""Dispatch on several nodes (issue 10 §3): the dispatch and failover parts of scripts/bench_cluster.

Real `sftpsms serve` nodes on the PostgreSQL of this machine (SFTPSMS_TEST_PG, default
postgresql://postgres@127.0.0.1:5432/test; a schema of its own, dropped afterwards) sharing one
data directory; files uploaded over SFTP to the first node; figures from the shared event log
(MessageSubmitted.submitted_at).

`dispatch(args)`: with 1 and then 2 nodes (and 1, 2, 3 for the service rate),
  - throughput: three accounts without limits, `--messages` in all, from one Start: msg/s from Start
    to the last MessageSubmitted;
  - rate accuracy: three accounts at 1 200 / 800 / 400 parts/s (and at `--scales` of that: a
    node's throughput on this 2-core machine is below 2 400 msg/s on PostgreSQL), achieved over
    `--window` seconds (after the first second, which holds each bucket's burst), and which node
    took each account's lease;
  - the service's rate (`--service-rate`, three accounts without limits) with 1, 2 and 3 nodes.
`failover(args)`: two nodes, one account sending at 500/s from the first node; kill -9 of that node
(the lease holder) → seconds until the account's next MessageSubmitted, sent by the other node
(target < 5 s), and how many messages the simulator recognised as sent again.

    python scripts/bench_cluster_dispatch.py [--only dispatch|failover] [--window 20] [--messages 60000]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore.dispatch_rows import SUBMITTED_TOPIC  # noqa: E402
from tests.cluster_nodes import (  # noqa: E402
    add_account,
    cluster_store,
    drop_schema,
    node,
    postgres_available,
    simulator_ids,
    submissions,
    upload,
)
from tests.service import Service  # noqa: E402

RATES = {"alpha": 1200.0, "beta": 800.0, "gamma": 400.0}


def generate(path: Path, contacts: int, start: datetime | None, offset: int) -> Path:
    """A version-7 file of single-part messages (with a Start to the second, when given)."""
    with path.open("w") as out:
        header: dict[str, object] = {"Version": 7, "Message_Template": "Code @@value1@@"}
        if start is not None:
            header["Start"] = start.strftime("%Y-%m-%d %H:%M:%S")
        out.write(json.dumps(header)[:-1] + ', "Contacts": [\n')
        for i in range(contacts):
            row = {"msisdn": f"2783{(offset + i) % 10_000_000:07d}", "values": {"value1": str(100000 + i)}}
            out.write(("" if i == 0 else ",\n") + json.dumps(row))
        out.write("\n]}\n")
    return path


def upload_file(service: Service, account: str, path: Path) -> None:
    upload(service, account, path.name, path.read_bytes())


def nodes(stack: ExitStack, data: Path, count: int, env: dict[str, str]) -> list[Service]:
    return [stack.enter_context(node(data, name, env)) for name in "abc"[:count]]


def wait_submitted(data: Path, count: int, timeout: float) -> int:
    store = cluster_store(data)
    try:
        deadline = time.monotonic() + timeout
        while True:
            done = _count(store)
            if done >= count or time.monotonic() > deadline:
                return done
            time.sleep(1)
    finally:
        store.close()


def _count(store: object) -> int:
    total, after = 0, 0
    while page := store.notifications(after, 10_000, [SUBMITTED_TOPIC]):  # type: ignore[attr-defined]
        total += len(page)
        after = page[-1].id
    return total


def throughput(scratch: Path, count: int, messages: int, lead: float) -> None:
    data = scratch / f"max{count}"
    start = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    env = {"SFTPSMS_SEND_RATE": "1000000", "SFTPSMS_ACCOUNT_RATE": "1000000"}
    per_account = messages // 3
    try:
        with ExitStack() as stack:
            services = nodes(stack, data, count, env)
            for number, name in enumerate(RATES):
                add_account(data, name, credits=per_account * 2)
                upload_file(services[0], name, generate(scratch / f"{name}-max.json", per_account, start, number * 1_000_000))
            for name in RATES:
                folder, report = services[0].wait_report(name, f"{name}-max.json", timeout=900)
                assert folder == "Processed", report
            if datetime.now(UTC) > start:
                print("    warning: ingest finished after Start; raise --lead", flush=True)
            done = wait_submitted(data, per_account * 3, timeout=900)
        store = cluster_store(data)
        try:
            sent = submissions(store)
        finally:
            store.close()
        last = max(s.at for s in sent)
        elapsed = (last - start).total_seconds()
        by_node = {name: len(simulator_ids(data, name)) for name in "abc"[:count]}
        print(f"  {count} node{'s' if count > 1 else ''}: {done:,} submitted in {elapsed:.2f} s from Start ="
              f" {done / elapsed:,.0f} msg/s   (sent by node: {by_node})", flush=True)
    finally:
        drop_schema(data)


def accuracy(scratch: Path, count: int, window: float, lead: float, scale: float = 1.0) -> None:
    rates = {name: rate * scale for name, rate in RATES.items()}
    data = scratch / f"rates{count}-{scale:g}"
    start = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    env = {"SFTPSMS_SEND_RATE": "100000"}
    counts = {name: int(rate * (window + 4)) for name, rate in rates.items()}
    try:
        with ExitStack() as stack:
            services = nodes(stack, data, count, env)
            store = cluster_store(data)
            try:
                for number, (name, rate) in enumerate(rates.items()):
                    add_account(data, name, credits=counts[name] * 2)
                    store.set_send_rate(name, rate)
                    upload_file(services[0], name, generate(scratch / f"{name}.json", counts[name], start, number * 1_000_000))
            finally:
                store.close()
            for name in RATES:
                folder, report = services[0].wait_report(name, f"{name}.json", timeout=900)
                assert folder == "Processed", report
            remaining = (start - datetime.now(UTC)).total_seconds()
            if remaining < 0:
                print(f"    warning: ingest finished {-remaining:.1f} s after Start; raise --lead", flush=True)
            time.sleep(max(0.0, remaining) + window + 3)
            holders = {
                service.log_path.stem.removeprefix("node-"): sorted(
                    name for name in rates if f"account={name} dispatch lease taken" in service.log()
                )
                for service in services
            }
        store = cluster_store(data)
        try:
            sent = submissions(store)
        finally:
            store.close()
        opened = start + timedelta(seconds=1)
        closed = opened + timedelta(seconds=window)
        parts: defaultdict[str, int] = defaultdict(int)
        for s in sent:
            if opened <= s.at < closed:
                parts[s.account] += s.parts
        line = ", ".join(
            f"{name} {parts[name] / window:,.1f}/{rate:g} ({100 * (parts[name] / window - rate) / rate:+.2f} %)"
            for name, rate in rates.items()
        )
        print(f"  {count} node{'s' if count > 1 else ''}: {line}; leases taken {holders}", flush=True)
    finally:
        drop_schema(data)


def service_rate(scratch: Path, count: int, rate: float, window: float, lead: float) -> None:
    """Three accounts without limits of their own behind a service rate: what the cluster sends."""
    data = scratch / f"service{count}"
    start = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    env = {"SFTPSMS_SEND_RATE": f"{rate:g}", "SFTPSMS_ACCOUNT_RATE": "1000000"}
    per_account = int(rate * (window + 4) / 3) + 1
    try:
        with ExitStack() as stack:
            services = nodes(stack, data, count, env)
            for number, name in enumerate(RATES):
                add_account(data, name, credits=per_account * 2)
                upload_file(services[0], name, generate(scratch / f"{name}-svc.json", per_account, start, number * 1_000_000))
            for name in RATES:
                folder, report = services[0].wait_report(name, f"{name}-svc.json", timeout=900)
                assert folder == "Processed", report
            time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()) + window + 3)
        store = cluster_store(data)
        try:
            sent = submissions(store)
        finally:
            store.close()
        opened = start + timedelta(seconds=1)
        closed = opened + timedelta(seconds=window)
        parts = sum(s.parts for s in sent if opened <= s.at < closed)
        by_node = {name: len(simulator_ids(data, name)) for name in "abc"[:count]}
        print(f"  {count} node{'s' if count > 1 else ''}: {parts / window:,.1f} parts/s of {rate:g}"
              f" ({100 * (parts / window - rate) / rate:+.2f} %; sent by node: {by_node})", flush=True)
    finally:
        drop_schema(data)


DEFAULTS = {"window": 20.0, "messages": 60_000, "lead": 30.0, "scales": [1.0, 0.25], "service_rate": 600.0}


def _options(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with this script's defaults for what a caller's parser (scripts/bench_cluster) lacks."""
    return argparse.Namespace(**{**DEFAULTS, **vars(args)})


def dispatch(args: argparse.Namespace) -> None:
    """Throughput and rate accuracy with 1 and 2 nodes (see the module docstring)."""
    args = _options(args)
    scratch = Path(tempfile.mkdtemp(prefix="bench-cluster-dispatch-"))
    print(f"dispatch on PostgreSQL: {args.messages:,} messages of three unlimited accounts, to the simulator")
    for count in (1, 2):
        throughput(scratch, count, args.messages, args.lead)
    for scale in args.scales:
        rates = " / ".join(f"{rate * scale:g}" for rate in RATES.values())
        print(f"rate accuracy: three accounts at {rates} parts/s over {args.window:g} s"
              " (achieved/configured, error; target within 5 %)")
        for count in (1, 2):
            accuracy(scratch, count, args.window, args.lead, scale)
    rate = args.service_rate
    print(f"the service's rate shared by the cluster: {rate:g} parts/s, three accounts without limits (target within 5 %)")
    for count in (1, 2, 3):
        service_rate(scratch, count, rate, args.window, args.lead)


def failover(args: argparse.Namespace) -> None:
    """kill -9 of the lease holder → seconds until the account's next MessageSubmitted."""
    args = _options(args)
    scratch = Path(tempfile.mkdtemp(prefix="bench-cluster-failover-"))
    data = scratch / "failover"
    env = {"SFTPSMS_ACCOUNT_RATE": "500", "SFTPSMS_SEND_RATE": "100000"}
    messages = 10_000
    print(f"failover: two nodes, one account sending {messages:,} messages at 500/s; kill -9 of its lease holder")
    try:
        with node(data, "a", env) as a:
            add_account(data, "acme", credits=messages * 2)
            upload_file(a, "acme", generate(scratch / "acme.json", messages, None, 0))
            folder, report = a.wait_report("acme", "acme.json", timeout=600)
            assert folder == "Processed", report
            with node(data, "b", env) as b:
                store = cluster_store(data)
                try:
                    while _count(store) < 3000:
                        time.sleep(0.2)
                    assert "account=acme dispatch lease taken" in a.log()
                    a.process.send_signal(signal.SIGKILL)
                    a.process.wait()
                    killed, killed_at = time.monotonic(), datetime.now(UTC)
                    position = store.last_position()
                    while not store.notifications(position, 1, [SUBMITTED_TOPIC]):
                        time.sleep(0.01)
                    seen = time.monotonic() - killed
                    while _count(store) < messages:
                        time.sleep(1)
                    sent = submissions(store)
                finally:
                    store.close()
                assert "account=acme dispatch lease taken" in b.log()
        first_after = min(s.at for s in sent if s.at > killed_at)
        per_message = Counter((s.log, s.index) for s in sent)
        accepted_a, accepted_b = set(simulator_ids(data, "a")), set(simulator_ids(data, "b"))
        again = accepted_a & accepted_b
        recognised = again <= set(simulator_ids(data, "b", "resubmitted.log"))
        print(f"  next MessageSubmitted {(first_after - killed_at).total_seconds():.2f} s after the kill"
              f" (seen in the store after {seen:.2f} s; target < 5 s)")
        print(f"  {len(per_message):,} messages, each submitted {sorted(set(per_message.values()))} time(s);"
              f" {len(again)} sent to the simulator again by b, {'all' if recognised else 'NOT all'} recognised as re-submissions")
    finally:
        drop_schema(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["dispatch", "failover"], help="run one part")
    parser.add_argument("--service-rate", type=float, default=600.0, help="the service's rate of the shared-rate runs")
    parser.add_argument("--window", type=float, default=20.0, help="seconds over which rates are measured")
    parser.add_argument("--messages", type=int, default=60_000, help="messages of the throughput runs")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.25],
                        help="rate-accuracy runs at these multiples of 1 200/800/400 parts/s")
    parser.add_argument("--lead", type=float, default=30.0, help="seconds from upload to Start (ingest must finish)")
    args = parser.parse_args()
    why = postgres_available()
    if why is not None:
        sys.exit(f"no PostgreSQL: {why}")
    if args.only in (None, "dispatch"):
        dispatch(args)
    if args.only in (None, "failover"):
        failover(args)


if __name__ == "__main__":
    main()
