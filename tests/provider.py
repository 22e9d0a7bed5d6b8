"""A fake SMS provider for HTTP gateway tests: a real HTTP server (the standard library's, in a
thread) that records every request, answers from a script, and de-duplicates by our message id."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]


@dataclass
class Provider:
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    # Answers for the next requests, in order: an int is a status to answer with, a float is
    # seconds to stall before answering normally. Then every request is answered normally.
    script: list[int | float] = field(default_factory=list)
    retry_after: str | None = None  # sent as Retry-After with scripted statuses
    ids_per_part: bool = False  # answer {"ids": [one per part]} instead of {"id": ...}
    ids: dict[str, list[str]] = field(default_factory=dict)  # our message id -> the provider's ids
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/messages"

    @property
    def sent(self) -> int:
        """Messages the provider took (a re-submitted message id counts once)."""
        with self.lock:
            return len(self.ids)

    def answer(self, recorded: Recorded) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(recorded)
            step = self.script.pop(0) if self.script else None
        if isinstance(step, int):
            return step, {"error": f"scripted {step}"}
        if isinstance(step, float):
            time.sleep(step)
        with self.lock:
            message_id = str(recorded.body["message_id"])
            ids = self.ids.get(message_id)
            if ids is None:
                count = int(recorded.body["parts"]) if self.ids_per_part else 1
                base = sum(len(v) for v in self.ids.values())
                ids = self.ids[message_id] = [f"P{base + n + 1:06d}" for n in range(count)]
        return 200, ({"ids": ids} if self.ids_per_part else {"id": ids[0]})


@contextmanager
def running_provider() -> Iterator[Provider]:
    provider = Provider()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real providers

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length))
            recorded = Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            status, answer = provider.answer(recorded)
            payload = json.dumps(answer).encode()
            try:
                self.send_response(status)
                if status != 200 and provider.retry_after is not None:
                    self.send_header("retry-after", provider.retry_after)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up waiting (timeout tests)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    provider.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
