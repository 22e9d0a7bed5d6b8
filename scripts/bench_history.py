"""The history benchmark behind scripts/bench_history (see there)."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore.contact_rows import batch_rows  # noqa: E402
from eventstore.dispatch_rows import encode_rows, reported, submitted  # noqa: E402
from eventstore.domain import DeliveryLog, DispatchLog, batch_id, message_id  # noqa: E402
from eventstore.history import History, HistoryQuery  # noqa: E402
from eventstore.store import SmsStore, open_store  # noqa: E402

BATCH = 1000
START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
NUMBERS = 200_000  # distinct recipients: each gets messages/NUMBERS messages


def msisdn(i: int) -> str:
    return f"2783{(i * 7919) % NUMBERS:07d}"


def build(store: SmsStore, messages: int, files: int) -> None:
    """`files` files of messages/files contacts, every message submitted and delivered."""
    encode = store.row_encoder()
    store.create_account(username="bench", password_hash="x", email=None, country="ZA", created_at=START)
    store.add_credits("bench", messages)
    per_file = messages // files
    done = 0
    for f in range(files):
        at = START + timedelta(hours=f)
        receipt = store.receive_file(account="bench", name=f"f{f}.json", size=1, fingerprint=str(f), now=at)
        file = receipt.file_id
        for number in range((per_file + BATCH - 1) // BATCH):
            first = number * BATCH
            indexes = range(first, min(per_file, first + BATCH))
            lines = [
                orjson.dumps(
                    {"index": i, "msisdn": msisdn(done + i), "customer_id": f"C{done + i:08d}",
                     "text": f"Hi Thandi, your statement for account AC{done + i:09d} is ready.", "parts": 1}
                )
                for i in indexes
            ]
            rows = batch_rows(
                file=file, account="bench", number=number, sender_id="Bench", not_before=None, expires_at=None,
                timestamp=at, lines=lines, encode=encode,
            )
            store.save_batch_rows([rows])
            bid = batch_id(file, number)
            log = DispatchLog.start(batch=bid, file=file, account="bench")
            sent = at + timedelta(seconds=1)
            pending = [
                p for i in indexes
                if (p := submitted(log, index=i, gateway="simulator", gateway_ids=[f"g{done + i}"], parts=1, at=sent,
                                   msisdn=msisdn(done + i), customer_id=f"C{done + i:08d}")) is not None
            ]
            store.save_rows(encode_rows(pending, log.collect_events(), store.mapper, encode))
            delivery = DeliveryLog.start(batch=bid, file=file, account="bench")
            pending = [
                p for i in indexes
                if (p := reported(delivery, i, message_id=message_id(file, i), msisdn=msisdn(done + i),
                                  customer_id=f"C{done + i:08d}", status="delivered", gateway="simulator",
                                  gateway_id=f"g{done + i}", error=None, at=sent.isoformat(),
                                  timestamp=sent + timedelta(seconds=2))) is not None
            ]
            for i in indexes[::100]:
                delivery.replied(i, message_id=message_id(file, i), msisdn=msisdn(done + i), customer_id=None,
                                 text="Thanks", gateway="simulator", reply_id=f"r{done + i}", opt_out=False,
                                 at=sent.isoformat())
            store.save_rows(encode_rows(pending, delivery.collect_events(), store.mapper, encode))
        done += per_file
        store.complete_file(file, at)
        print(f"  built {done:,} messages", end="\r", flush=True)
    print()


def timed(call: object, repeat: int = 20) -> float:
    """The median of `repeat` calls, in ms."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-history-"))
    try:
        store = open_store(scratch)
        print(f"building an event log of {args.messages:,} messages in {args.files} files ...", flush=True)
        started = time.perf_counter()
        build(store, args.messages, args.files)
        events = store.last_position()
        print(f"  {events:,} events in {time.perf_counter() - started:.1f} s")
        history = History(scratch / "history.db")
        started, cpu = time.perf_counter(), time.process_time()
        history.catch_up(store)
        follow, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"history follows the log:  {args.messages / follow:,.0f} messages/s "
            f"({events / follow:,.0f} events/s, {follow:.1f} s; on CPU time {args.messages / cpu:,.0f} messages/s)"
            "   (target >= 100 000 messages/s)"
        )
        number = msisdn(args.messages // 2)
        found = list(history.iter_messages(HistoryQuery(msisdn=number)))
        one = timed(lambda: list(history.iter_messages(HistoryQuery(msisdn=number))))
        print(f"one number's history:     {one:.2f} ms for {len(found)} messages of {args.messages:,}   (target < 50 ms)")
        customer = f"C{args.messages // 3:08d}"
        by_customer = timed(lambda: history.page(HistoryQuery(customer_id=customer)))
        print(f"one customerId:           {by_customer:.2f} ms")
        files = history.files(account="bench")
        middle = UUID(files[len(files) // 2]["file_id"])
        query = HistoryQuery(file_id=str(middle))
        cursor = history.page(query, limit=100)["next"]
        for _ in range(50):  # a cursor from deep inside the file
            cursor = history.page(query, limit=100, cursor=cursor)["next"]
        page = timed(lambda: history.page(query, limit=100, cursor=cursor))
        print(f"a file's page of 100:     {page:.2f} ms (page 52 of {args.messages // args.files // 100:,})   (target < 50 ms)")
        since = (START + timedelta(hours=args.files // 2)).isoformat()
        account = timed(lambda: history.page(HistoryQuery(account="bench", since=since, status="delivered"), limit=100))
        print(f"an account's page of 100 since a time, by status: {account:.2f} ms")
        size = sum(p.stat().st_size for p in scratch.glob("history.db*"))
        print(f"history.db:               {size / 1e6:.0f} MB ({size / args.messages:.0f} B per message)")
        history.close()
        store.close()
    finally:
        if args.keep:
            print(f"data kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
