"""The rolling restart of issue 10 §3 (b), as figures: N real nodes on one PostgreSQL schema and one
data directory behind a real HAProxy (tests/cluster.py); a client uploads a small file every
--every seconds for --seconds through HAProxy (retrying a failed upload once, after a pause) while
each node in turn is stopped with SIGTERM and started again. Prints the uploads attempted, retried
and failed, the files received or completed more than once (duplicates), the uploads without their
Processed report and the messages not queued exactly once (losses), and each node's restart.

The files' messages are sent at once: it also counts the messages not submitted exactly once or
without exactly one final status (the dispatch leases moving between the nodes as they restart). `rolling(args)` is what scripts/bench_cluster calls; run it alone with
`flock /tmp/heavy.lock .venv/bin/python scripts/bench_cluster_rolling.py [--seconds 60]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import rolling_restart, running_cluster, tally, wait_reports  # noqa: E402

CONTACTS_PER_FILE = 3  # tests.cluster.small_upload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=2, help="nodes behind HAProxy (default 2)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the client uploads (default 60)")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between two uploads (default 0.2)")


def rolling(args: argparse.Namespace) -> None:
    """Run the rolling restart once and print what the client and the store saw."""
    names = tuple(chr(ord("a") + i) for i in range(args.nodes))
    with tempfile.TemporaryDirectory(prefix="bench-rolling-") as scratch, running_cluster(Path(scratch), names) as cluster:
        cluster.any_service().add_account("acme", credits=10_000_000)
        started = time.monotonic()
        run = rolling_restart(cluster, "acme", seconds=args.seconds, every=args.every, send=True)
        uploaded = time.monotonic() - started
        reports = wait_reports(cluster, "acme", run.names, timeout=120)
        settled = time.monotonic() - started
        deadline = time.monotonic() + 120
        while True:  # until every queued message has its final status (or two minutes)
            store = cluster.store()
            try:
                counts = tally(store, "acme")
            finally:
                store.close()
            if len(counts.reported) >= len(counts.queued) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        final = time.monotonic() - started
    delivered = [name for name in run.names if name not in run.failed]
    duplicates = sorted(
        name for name in run.names if counts.received[name] > 1 or len(counts.completed.get(name, [])) > 1
    )
    lost = sorted(name for name in delivered if reports.get(name, ("", {}))[0] != "Processed")
    expected_messages = CONTACTS_PER_FILE * len(delivered)
    twice = sum(1 for n in counts.queued.values() if n > 1)
    print(f"rolling restart: {args.nodes} nodes behind HAProxy, an upload every {args.every:g} s for {args.seconds:g} s")
    for node, down, back in run.restarts:
        print(f"  node {node}: stopped (SIGTERM) in {down:.1f} s, UP in HAProxy again {back:.1f} s after the stop")
    print(f"  uploads attempted {len(run.names)}, retried {len(run.retried)}, failed after one retry {len(run.failed)}")
    print(f"  files received or completed twice (duplicates): {len(duplicates)} {duplicates[:5]}")
    print(f"  uploads without their Processed report (losses): {len(lost)} {lost[:5]}")
    print(
        f"  messages queued {len(counts.queued)} of {expected_messages}, {twice} queued more than once; "
        f"client done after {uploaded:.1f} s, every report in {settled:.1f} s"
    )
    unsent = sum(1 for m in counts.queued if counts.submitted[m] == 0)
    sent_twice = sum(1 for n in counts.submitted.values() if n > 1)
    no_status = sum(1 for m in counts.queued if counts.reported[m] != 1)
    print(
        f"  messages submitted {sum(counts.submitted.values())}: {unsent} never, {sent_twice} more than once; "
        f"{no_status} without exactly one final status; every status in {final:.1f} s"
    )
    for error in run.errors[:5]:
        print(f"  a first try's error: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    rolling(parser.parse_args())


if __name__ == "__main__":
    main()
