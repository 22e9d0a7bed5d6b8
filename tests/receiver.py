"""A real HTTP receiver for webhook tests: a threaded stdlib HTTP/1.1 server on a loopback port
that records every POST (headers, body bytes, arrival time) and answers by a plan."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival
    status: int  # what the receiver answered

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """`answer(headers, body) -> status` decides each response (default 200)."""

    port: int = 0
    answer: Callable[[dict[str, str], bytes], int] = lambda headers, body: 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def posts(self, status: int | None = 200) -> list[Received]:
        with self.lock:
            return [r for r in self.received if status is None or r.status == status]

    def wait(self, count: int, *, status: int | None = 200, timeout: float = 20.0) -> list[Received]:
        """Block (a thread) until `count` POSTs with `status` arrived."""
        def enough() -> bool:
            return sum(1 for r in self.received if status is None or r.status == status) >= count

        with self.lock:
            if self.lock.wait_for(enough, timeout):
                return self.posts(status)
        raise AssertionError(f"{len(self.posts(status))} of {count} POSTs arrived: {self.posts(None)[-5:]}")


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops SYNs when a sender opens many connections at once


@contextmanager
def running_receiver(answer: Callable[[dict[str, str], bytes], int] | None = None) -> Iterator[Receiver]:
    receiver = Receiver()
    if answer is not None:
        receiver.answer = answer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.answer(headers, body)
            with receiver.lock:
                receiver.received.append(Received(self.path, headers, body, time.time(), status))
                receiver.lock.notify_all()
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
