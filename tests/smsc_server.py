"""The test SMSC (tests/smsc/smsc.js, node-smpp) as a process the tests start and drive.

`npm ci` runs once per checkout (when node_modules does not match package-lock.json); each test
gets its own SMSC process on a free port. Commands go to its stdin, events come from its stdout
(one JSON object a line; see smsc.js).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

SMSC_DIR = Path(__file__).parent / "smsc"
EVENT_TIMEOUT = 10.0  # seconds to wait for an SMSC event


def install_smsc() -> None:
    """`npm ci` in tests/smsc unless node_modules already holds what package-lock.json names."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the test SMSC")
    lock = SMSC_DIR / "package-lock.json"
    stamp = SMSC_DIR / "node_modules" / f".ci-{hashlib.sha256(lock.read_bytes()).hexdigest()[:16]}"
    if stamp.exists():
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=SMSC_DIR, check=True, timeout=300
    )
    stamp.touch()


class Smsc:
    """A running test SMSC: its port, the events it reported, and commands to steer it."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.port = 0
        self.events: list[dict[str, Any]] = []
        self._arrived = trio.Event()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        while chunk := await self.process.stdout.receive_some(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.events.append(json.loads(line))
            self._arrived.set()
            self._arrived = trio.Event()

    async def command(self, cmd: str, **fields: Any) -> None:
        """Send a command and wait until the SMSC has handled it (stdin and the SMPP socket race)."""
        await self._send(cmd, **fields)
        await self.sync()

    async def _send(self, cmd: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == kind]

    async def wait_for(
        self, kind: str, count: int = 1, where: Callable[[dict[str, Any]], bool] = lambda e: True
    ) -> list[dict[str, Any]]:
        """The first `count` events of a kind (that satisfy `where`), waiting for them to arrive."""
        with trio.fail_after(EVENT_TIMEOUT):
            while True:
                found = [event for event in self.of(kind) if where(event)]
                if len(found) >= count:
                    return found[:count]
                await self._arrived.wait()

    async def sync(self) -> None:
        """Wait until the SMSC has handled every command sent before this one."""
        token = len(self.events)
        await self._send("ping", id=token)
        await self.wait_for("pong", where=lambda e: e["id"] == token)


@asynccontextmanager
async def running_smsc() -> AsyncIterator[Smsc]:
    install_smsc()
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(
                trio.run_process,
                ["node", str(SMSC_DIR / "smsc.js"), "0"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                check=False,
            )
        )
        smsc = Smsc(process)
        nursery.start_soon(smsc._read)
        smsc.port = (await smsc.wait_for("listening"))[0]["port"]
        try:
            yield smsc
        finally:
            nursery.cancel_scope.cancel()


@contextmanager
def smsc_process(**config: Any) -> Iterator[int]:
    """A test SMSC for synchronous tests (the service harness): configured once, its port yielded."""
    install_smsc()
    process = subprocess.Popen(
        ["node", str(SMSC_DIR / "smsc.js"), "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        listening = json.loads(process.stdout.readline())
        assert listening["event"] == "listening", listening
        process.stdin.write(json.dumps({"cmd": "config", "events": False, **config}) + "\n")
        process.stdin.flush()
        yield int(listening["port"])
    finally:
        process.kill()
        process.wait()
