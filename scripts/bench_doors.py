"""The SFTP door under hostile load, behind scripts/bench_doors (see there)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sftpsms.passwords import hash_password  # noqa: E402
from tests.service import Service, running_service  # noqa: E402


def memory(pid: int) -> str:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return f"RSS {int(fields['VmRSS'].split()[0]) // 1024} MB, peak {int(fields['VmHWM'].split()[0]) // 1024} MB"


def login(port: int, username: str, password: str, source: str) -> tuple[bool, float]:
    started = time.perf_counter()
    connection: paramiko.Transport | None = None
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=120, source_address=(source, 0))
        connection = paramiko.Transport(sock)
        connection.banner_timeout = connection.auth_timeout = 120
        connection.connect(username=username, password=password)
        ok = True
    except Exception:
        ok = False
    finally:
        if connection is not None:
            connection.close()
    return ok, time.perf_counter() - started


def at_once(n: int, fn: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, fn(i))) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return results


def handles(service: Service, count: int) -> None:
    service.add_account("opener")
    connection = paramiko.Transport(("127.0.0.1", service.port))
    connection.connect(username="opener", password="secret-pw")
    sftp = paramiko.SFTPClient.from_transport(connection)
    assert sftp is not None
    with sftp.open("Send_SMS/keep.part", "wb") as remote:
        remote.write(b"x")
    kept, refused, error = [], 0, ""
    started = time.perf_counter()
    for _ in range(count):
        try:
            kept.append(sftp.open("Send_SMS/keep.part", "rb"))
        except OSError as refusal:
            refused, error = refused + 1, str(refusal)
    took = time.perf_counter() - started
    alive = service.process.poll() is None
    fds = len(os.listdir(f"/proc/{service.process.pid}/fd")) if alive else -1
    print(f"{count} opens on one connection: {len(kept)} opened, {refused} refused ({error}); "
          f"service alive {alive}, {fds} descriptors, {took:.1f} s")  # fmt: skip
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bad-logins", type=int, default=150)
    parser.add_argument("--good-logins", type=int, default=200)
    parser.add_argument("--handles", type=int, default=20_000)
    args = parser.parse_args()
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as scratch, running_service(Path(scratch) / "data") as service:
        pid = service.process.pid
        print(f"started: {memory(pid)}")
        results = at_once(args.bad_logins, lambda i: login(service.port, f"nobody{i}", "wrong", f"127.0.1.{i % 15 + 1}"))
        print(f"{args.bad_logins} wrong logins at once (15 addresses): {memory(pid)}, "
              f"slowest answer {max(r[1] for r in results):.1f} s")  # fmt: skip
        store = service.store()
        password_hash = hash_password("pw")
        for i in range(args.good_logins):
            store.create_account(username=f"good{i}", password_hash=password_hash, email=None, country="ZA",
                                 created_at=datetime(2023, 1, 1, tzinfo=UTC))  # fmt: skip
        store.close()
        results = at_once(args.good_logins, lambda i: login(service.port, f"good{i}", "pw", f"127.0.2.{i % 20 + 1}"))
        times = sorted(r[1] for r in results)
        print(f"{args.good_logins} right logins at once (20 addresses): {sum(r[0] for r in results)} in, "
              f"p50 {statistics.median(times):.2f} s, p95 {times[int(len(times) * 0.95)]:.2f} s; {memory(pid)}")  # fmt: skip
        handles(service, args.handles)


if __name__ == "__main__":
    main()
