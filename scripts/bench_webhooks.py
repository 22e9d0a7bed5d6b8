"""The webhook benchmark behind scripts/bench_webhooks (see there)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
import trio  # noqa: E402

from actors.webhooks import WebhookSender  # noqa: E402
from actors.writer import open_store_channel, run_writer  # noqa: E402
from eventstore.domain import DeliveryLog, message_id  # noqa: E402
from eventstore.store import open_store  # noqa: E402
from sftpsms.config import Settings  # noqa: E402
from sftpsms.passwords import hash_password  # noqa: E402
from sftpsms.webhooks import new_secret  # noqa: E402

TICK = 0.01  # seconds between groups of events


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops SYNs when a sender opens many connections at once


def receive(expected: int, out: Path) -> None:
    """The receiver process: answers 200, notes each POST's latency, writes them once all came."""
    latencies: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            arrived = time.time()
            sent = datetime.fromisoformat(orjson.loads(body)["data"]["at"]).timestamp()
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            latencies.append(arrived - sent)
            if len(latencies) == expected:
                out.write_text(json.dumps(latencies))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


async def produce(data_dir: Path, url: str, rate: int, seconds: float) -> int:
    store = open_store(data_dir)
    store.create_account(username="bench", password_hash=hash_password("x"), email=None, country="ZA", created_at=datetime.now(UTC))
    store.add_webhook("bench", url, new_secret(), ["delivery", "reply"])
    settings = Settings(data_dir=data_dir)
    per_tick = max(1, round(rate * TICK))
    total = int(rate * seconds)
    written = 0
    async with trio.open_nursery() as nursery:
        client, inbox = open_store_channel()
        sender = WebhookSender(settings=settings, store=store, writer=client.clone(), clock=lambda: datetime.now(UTC))
        await nursery.start(partial(run_writer, inbox, store=store, on_written=sender.poke))
        await nursery.start(sender.run)
        start = trio.current_time()
        file = uuid4()
        log = DeliveryLog.start(batch=uuid4(), file=file, account="bench")
        while written < total:
            if written and written % 1000 == 0:
                log = DeliveryLog.start(batch=uuid4(), file=file, account="bench")
            now = datetime.now(UTC).isoformat()
            for index in range(written, min(written + per_tick, total)):
                log.reported(
                    index, message_id=message_id(file, index), msisdn=f"2783{index:07d}", customer_id=None,
                    status="delivered", gateway="simulator", gateway_id=str(index), error=None, at=now,
                )
            written = min(written + per_tick, total)
            await client.run(partial(_save, log=log))
            await trio.sleep_until(start + written / rate)
        # Let the sender drain, then stop.
        await trio.sleep(3.0)
        nursery.cancel_scope.cancel()
    store.close()
    return written


def _save(store: Any, log: DeliveryLog) -> None:
    store.save(log)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--receiver", nargs=2, metavar=("EXPECTED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        receive(int(args.receiver[0]), Path(args.receiver[1]))
        return 0
    expected = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as scratch:
        out = Path(scratch) / "latencies.json"
        receiver = subprocess.Popen(
            [sys.executable, __file__, "--receiver", str(expected), str(out)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert receiver.stdout is not None
            port = int(receiver.stdout.readline())
            began = time.monotonic()
            written = trio.run(produce, Path(scratch) / "data", f"http://127.0.0.1:{port}/hook", args.rate, args.seconds)
            elapsed = time.monotonic() - began
        finally:
            receiver.terminate()
            receiver.wait()
        if not out.exists():
            print(f"the receiver did not get all {expected} POSTs", file=sys.stderr)
            return 1
        latencies = [1000 * value for value in json.loads(out.read_text())]
    print(
        f"{written} events at {args.rate}/s ({elapsed:.1f}s incl. drain): receipt->webhook latency "
        f"p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
