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


def queue_files(store: SmsStore, messages: int, files: int) -> list[UUID]:
    """`files` files of messages/files contacts each, queued (as pass 2 stores them)."""
    encode = store.row_encoder()
    store.create_account(username="bench", password_hash="x", email=None, country="ZA", created_at=START)
    store.add_credits("bench", messages)
    per_file = messages // files
    made = []
    for f in range(files):
        at = START + timedelta(hours=f)
        file = store.receive_file(account="bench", name=f"f{f}.json", size=1, fingerprint=str(f), now=at).file_id
        first_message = f * per_file
        for number in range((per_file + BATCH - 1) // BATCH):
            lines = [
                orjson.dumps(
                    {"index": i, "msisdn": msisdn(first_message + i), "customer_id": f"C{first_message + i:08d}",
                     "text": f"Hi Thandi, your statement for account AC{first_message + i:09d} is ready.", "parts": 1}
                )
                for i in range(number * BATCH, min(per_file, (number + 1) * BATCH))
            ]
            rows = batch_rows(
                file=file, account="bench", number=number, sender_id="Bench", not_before=None, expires_at=None,
                timestamp=at, lines=lines, encode=encode,
            )
            store.save_batch_rows([rows])
        store.complete_file(file, at)
        made.append(file)
        print(f"  queued {first_message + per_file:,} messages", end="\r", flush=True)
    print()
    return made


def send_files(store: SmsStore, files: list[UUID], per_file: int) -> None:
    """Every message submitted and delivered, a reply to one in a hundred (the dispatcher's and the
    receipts actor's row paths)."""
    encode = store.row_encoder()
    for f, file in enumerate(files):
        first_message = f * per_file
        sent = START + timedelta(hours=f, seconds=1)
        for number in range((per_file + BATCH - 1) // BATCH):
            indexes = range(number * BATCH, min(per_file, (number + 1) * BATCH))
            bid = batch_id(file, number)
            log = DispatchLog.start(batch=bid, file=file, account="bench")
            pending = [
                p for i in indexes
                if (p := submitted(log, index=i, gateway="simulator", gateway_ids=[f"g{first_message + i}"], parts=1,
                                   at=sent, msisdn=msisdn(first_message + i),
                                   customer_id=f"C{first_message + i:08d}")) is not None
            ]
            store.save_rows(encode_rows(pending, log.collect_events(), store.mapper, encode))
            delivery = DeliveryLog.start(batch=bid, file=file, account="bench")
            pending = [
                p for i in indexes
                if (p := reported(delivery, i, message_id=message_id(file, i), msisdn=msisdn(first_message + i),
                                  customer_id=f"C{first_message + i:08d}", status="delivered", gateway="simulator",
                                  gateway_id=f"g{first_message + i}", error=None, at=sent.isoformat(),
                                  timestamp=sent + timedelta(seconds=2))) is not None
            ]
            for i in indexes[::100]:
                delivery.replied(i, message_id=message_id(file, i), msisdn=msisdn(first_message + i), customer_id=None,
                                 text="Thanks", gateway="simulator", reply_id=f"r{first_message + i}", opt_out=False,
                                 at=sent.isoformat())
            store.save_rows(encode_rows(pending, delivery.collect_events(), store.mapper, encode))
        print(f"  sent {first_message + per_file:,} messages", end="\r", flush=True)
    print()


def follow(history: History, store: SmsStore, messages: int, what: str) -> None:
    started, cpu = time.perf_counter(), time.process_time()
    before = history.position()
    history.catch_up(store)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    events = history.position() - before
    print(
        f"history follows {what}: {messages / elapsed:,.0f} messages/s ({events / elapsed:,.0f} events/s, "
        f"{elapsed:.1f} s; on CPU time {messages / cpu:,.0f} messages/s)"
    )


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
        print(f"queueing {args.messages:,} messages in {args.files} files ...", flush=True)
        files = queue_files(store, args.messages, args.files)
        history = History(scratch / "history.db")
        follow(history, store, args.messages, "queued files   ")
        print("submitting and delivering them ...", flush=True)
        send_files(store, files, args.messages // args.files)
        follow(history, store, args.messages, "sent, delivered")
        rebuilt = History(scratch / "rebuilt.db")
        follow(rebuilt, store, args.messages, "the whole log  ")
        print("   (target: the history catches up with the log at >= 100 000 messages/s)")
        rebuilt.close()
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
