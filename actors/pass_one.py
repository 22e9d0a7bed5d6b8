"""Pass 1 of a big file split across processes: the same plan and spool, in the same order, sooner.

Validating a contact is pure Python, so threads would take turns on the GIL; processes do not.
The contacts are split by index into consecutive parts that start on opt-out lookup batches: this
process checks the first part itself while a worker process (`python -m actors.pass_one`, which
imports only the pure domain and sqlite3) checks each later one, looks its numbers up in the
opt-outs and writes, per batch, a sftpsms.intake.Tally (counts, errors, spool lines) to a part
file. plan_file then counts the workers' batches in order after its own part, so Max_Errors, the
first errors and the spool come out exactly as from a single pass, at little cost to this process.

The workers are warm: PassOneWorkers starts them once with the service and each waits on its stdin
for one part after another (starting a Python process with the domain modules costs about 0.1 s,
a tenth of pass 1 of 100 000 contacts).

Errors stay where they were: a worker that meets a contact-level FileRejected (a contact with no
message and no template) or broken JSON stops there and reports it after its batches, which is
where a single pass would have raised it; every worker parses the file from its start, so broken
JSON before its part fails it the same way. A worker that dies (killed, out of memory) is not the
file's fault: this process checks the rest of that part itself and the worker is replaced.

Memory: a worker holds the domain modules and one parser (about 20 MB), so the number of
processes is kept small (SFTPSMS_PASS_ONE_PROCESSES, default 2 = this process and one worker).
Files under SPLIT_MIN_BYTES, a setting of 1, or no worker that can start take the single
in-process pass.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import orjson

from eventstore.optouts import find_optouts
from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.fileformat import Header, estimate_contacts, iter_contacts
from sftpsms.intake import (
    OPTOUT_LOOKUP_BATCH,
    CheckContacts,
    ContactChecker,
    Outcome,
    Tally,
    check_all,
    header_template,
    tally,
)
from sftpsms.limits import Limits
from sftpsms.numbers import NetworkDirectory

log = logging.getLogger(__name__)

OptOutSource = tuple[Path, str]  # the read-model database and the account whose opt-outs count

SPLIT_MIN_BYTES = 1 << 20  # about 9 000 contacts: below this a part takes a few tens of ms
# This process's part relative to a worker's: it also reads every other part back (counts, the
# spool) while a worker also parses the contacts before its part. With a warm worker (no start-up
# to wait for) the two finished together at about 1.3 (100 000 contacts, within ±0.2 s from run
# to run on the shared machine; 0.95 was measured with a worker started per file).
OWN_SHARE = 1.3
WAIT_FOR_WORKER = 0.005  # seconds between looks at a part file that is still being written
STOP_TIMEOUT = 2.0  # seconds a worker has to exit once its stdin is closed, before it is killed


def pass_one_checker(
    workers: PassOneWorkers | None, *, parts: Path, optouts: OptOutSource, min_bytes: int = SPLIT_MIN_BYTES
) -> CheckContacts:
    """The way plan_file should check a file's contacts with the help of `workers` (None: in this
    thread only). The workers' part files are `<parts>.part1`, ... (one name per file being
    processed); they look numbers up in the read-model database and account of `optouts`, as
    plan_file's own lookup does."""
    if workers is None or workers.count < 1:
        return check_all

    def check_split(path: Path, header: Header, checker: ContactChecker) -> Generator[Outcome | Tally, None, None]:
        if path.stat().st_size < min_bytes:
            return check_all(path, header, checker)
        return _check_split(path, header, checker, workers, parts, optouts)

    return check_split


def part_bounds(contacts: int, processes: int) -> list[int]:
    """Where each part after the first starts: multiples of the opt-out lookup batch, so each part
    is flushed in the same batches as a single pass (the last part runs to the file's end)."""
    own = contacts * OWN_SHARE / (processes - 1 + OWN_SHARE)
    each = (contacts - own) / (processes - 1)
    bounds = []
    for k in range(processes - 1):
        start = round((own + k * each) / OPTOUT_LOOKUP_BATCH) * OPTOUT_LOOKUP_BATCH
        bounds.append(max(start, OPTOUT_LOOKUP_BATCH))
    return sorted(set(bounds))


class WorkerDied(Exception):
    """A worker process ended without finishing its part; `contacts` of it had been counted."""

    def __init__(self, contacts: int) -> None:
        super().__init__(contacts)
        self.contacts = contacts


def _check_split(
    path: Path,
    header: Header,
    checker: ContactChecker,
    workers: PassOneWorkers,
    parts: Path,
    optouts: OptOutSource,
) -> Generator[Outcome | Tally, None, None]:
    bounds = part_bounds(estimate_contacts(path, header), workers.count + 1)
    jobs: list[_Job] = []
    try:
        for k, start in enumerate(bounds):
            stop = bounds[k + 1] if k + 1 < len(bounds) else None
            try:
                worker = workers.acquire()
            except OSError as error:  # no processes here (limits, sandbox): one pass in this thread
                log.warning("pass one in one process: cannot start a worker (%s)", error)
                yield from check_all(path, header, checker)
                return
            jobs.append(_Job(worker, parts.with_name(f"{parts.name}.part{k + 1}"), start, stop))
            jobs[-1].send(path, header, checker, optouts)
        for raw in iter_contacts(path, header, stop=bounds[0]):
            yield checker.check(raw)
        for job in jobs:
            try:
                yield from job.tallies()
            except WorkerDied as death:
                log.warning(
                    "pass-one worker pid=%d died (exit status %s) at contact %d: checking the rest here",
                    job.worker.pid,
                    job.worker.process.poll(),
                    job.start + death.contacts,
                )
                for raw in iter_contacts(path, header, start=job.start + death.contacts, stop=job.stop):
                    yield checker.check(raw)
    finally:
        for job in jobs:
            # A worker still busy with a part nobody reads (the file failed) is not given another.
            workers.release(job.worker, idle=job.done)
            job.part.unlink(missing_ok=True)


class _Process:
    """One worker process, waiting on its stdin for jobs (one JSON line each)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid

    @classmethod
    def spawn(cls) -> _Process:
        return cls(
            subprocess.Popen(
                [sys.executable, "-m", "actors.pass_one", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            )
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, job: dict[str, Any]) -> None:
        """Raises OSError (BrokenPipeError) when the process is gone."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(job).encode() + b"\n")
        self.process.stdin.flush()

    def stop(self, *, kill: bool = False) -> None:
        """End the process: at once with `kill`, else by closing its stdin (it exits when idle)."""
        if kill and self.alive():
            self.process.kill()
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:  # a broken pipe while flushing: the process is gone already
            pass
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class PassOneWorkers:
    """The service's warm pass-one worker processes: `count` of them, started once.

    Resource handling: `start` spawns the workers, which wait on their stdin for parts; `acquire`
    hands one to a file (a fresh one when none is idle: two files in pass 1 at once, or the idle one
    found dead) and `release` takes it back, keeping at most `count` idle and replacing one that
    died or was left busy with a part nobody reads (killed). `close` ends them all: their stdin is
    closed and they exit; one that does not within STOP_TIMEOUT is killed. A worker also exits on
    its own when this process is gone (its stdin ends, or it sees a new parent while working).
    Thread-safe: pass 1 runs in worker threads.

    Error handling: `start` and `acquire` raise OSError when no process can be started; the
    caller then checks the file in its own thread.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.started = 0  # processes spawned so far (the first `count` at start, then replacements)
        self._idle: list[_Process] = []
        self._busy: set[_Process] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        with self._lock:
            while len(self._idle) < self.count:
                self._idle.append(self._spawn())

    def pids(self) -> list[int]:
        """The pids of every worker process alive now (idle or busy)."""
        with self._lock:
            return [p.pid for p in [*self._idle, *self._busy] if p.alive()]

    def acquire(self) -> _Process:
        with self._lock:
            if self._closed:
                raise OSError("the pass-one workers are closed")
            while self._idle:
                process = self._idle.pop()
                if process.alive():
                    break
                log.warning(
                    "pass-one worker pid=%d had died (exit status %s): starting another",
                    process.pid,
                    process.process.returncode,
                )
                process.stop()
            else:
                process = self._spawn()
            self._busy.add(process)
            return process

    def release(self, process: _Process, *, idle: bool) -> None:
        """Take back a worker: `idle` True when it finished its part and waits for the next one."""
        with self._lock:
            self._busy.discard(process)
            keep = idle and process.alive() and not self._closed and len(self._idle) < self.count
            if keep:
                self._idle.append(process)
                return
        process.stop(kill=not idle)
        with self._lock:
            if not self._closed and len(self._idle) + len(self._busy) < self.count:
                try:
                    self._idle.append(self._spawn())  # warm again by the next file
                except OSError as error:
                    log.warning("cannot restart a pass-one worker (%s)", error)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            processes = [*self._idle, *self._busy]
            self._idle.clear()
            self._busy.clear()
        for process in processes:
            process.stop()

    def _spawn(self) -> _Process:
        process = _Process.spawn()
        self.started += 1
        return process


class _Job:
    """One part of a file given to one worker, and the part file it writes."""

    def __init__(self, worker: _Process, part: Path, start: int, stop: int | None) -> None:
        self.worker = worker
        self.part = part
        self.start = start
        self.stop = stop
        self.done = False  # the worker wrote its verdict: it is idle again

    def send(self, path: Path, header: Header, checker: ContactChecker, optouts: OptOutSource) -> None:
        self.part.parent.mkdir(parents=True, exist_ok=True)
        # A new file, never the old one truncated: a worker orphaned by a crash before a restart
        # may still be writing to that one.
        self.part.unlink(missing_ok=True)
        self.part.write_bytes(b"")
        job = {
            "path": str(path),
            "header": asdict(header),
            "country": checker.country,
            "routes": list(checker.networks.prefixes),
            "max_parts": checker.max_parts,
            "unicode": checker.unicode,
            "optouts": [str(optouts[0]), optouts[1]],
            "start": self.start,
            "stop": self.stop,
            "part": str(self.part),
        }
        try:
            self.worker.send(job)
        except OSError:  # died meanwhile: tallies() finds it dead and this process does the part
            pass

    def tallies(self) -> Iterator[Tally]:
        """The part's batches as the worker writes them, then its verdict. Raises WorkerDied."""
        counted = 0
        with self.part.open("rb") as part:
            lines = _follow(part, self.worker)
            for head in lines:
                fields = orjson.loads(head)
                if "verdict" in fields:
                    self.done = True
                    verdict = fields["verdict"]
                    if verdict is not None:
                        raise FileRejected(ErrorCode(verdict["code"]), verdict["detail"])
                    return
                batch = Tally(**fields)
                batch.lines = [line.decode() for line in _take(lines, batch.contacts)]
                if len(batch.lines) < batch.contacts:
                    break  # cut off by the worker's death
                counted += batch.contacts
                yield batch
        raise WorkerDied(counted)


def _take(lines: Iterator[bytes], count: int) -> list[bytes]:
    taken = []
    for line in lines:
        taken.append(line)
        if len(taken) == count:
            break
    return taken


def _follow(part: IO[bytes], worker: _Process) -> Iterator[bytes]:
    """Complete lines of a file a worker is appending to, until it is gone (a worker that finishes
    its part ends it with a verdict line, after which nobody asks for more)."""
    rest = b""
    while True:
        chunk = part.read(1 << 16)
        if chunk:
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        elif worker.alive():
            time.sleep(WAIT_FOR_WORKER)
        else:
            chunk = part.read()  # whatever it wrote after the last look, then it is gone
            if not chunk:
                return
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines


def _work(job: dict[str, Any], parent: int) -> None:
    """In the worker process: check one part, write its batches and then its verdict."""
    given = job["header"]
    header = Header(**{**given, "warnings": tuple(given["warnings"]), "limits": Limits(**given["limits"])})
    checker = ContactChecker(
        template=header_template(header),
        country=job["country"],
        networks=NetworkDirectory(job["routes"]),
        max_parts=job["max_parts"],
        unicode=job.get("unicode", False),
    )
    database, account = job["optouts"]
    verdict: dict[str, Any] | None = None
    with closing(sqlite3.connect(database, timeout=30)) as models, open(job["part"], "wb") as out:  # noqa: PTH123

        def write(outcomes: list[Outcome]) -> None:
            if os.getppid() != parent:  # the server is gone: nobody will read this part
                raise SystemExit(1)
            batch = tally(outcomes, header, lambda numbers: find_optouts(models, account, numbers))
            head = {name: value for name, value in vars(batch).items() if name != "lines"}
            out.write(orjson.dumps(head) + b"\n" + "\n".join(batch.lines).encode() + b"\n")
            out.flush()  # the other process reads the part while it grows

        pending: list[Outcome] = []
        try:
            for raw in iter_contacts(Path(job["path"]), header, start=job["start"], stop=job["stop"]):
                pending.append(checker.check(raw))
                if len(pending) >= OPTOUT_LOOKUP_BATCH:
                    write(pending)
                    pending = []
            if pending:
                write(pending)
        except FileRejected as rejection:  # the batch under way is dropped, as in a single pass
            verdict = {"code": str(rejection.code), "detail": rejection.detail}
        out.write(orjson.dumps({"verdict": verdict}) + b"\n")


def serve(parent: int) -> None:
    """In the worker process: one part per line of stdin, until stdin ends (the server closed it,
    or is gone)."""
    gc.freeze()  # the modules stay: collections walk only what a part allocates
    for line in sys.stdin.buffer:
        _work(json.loads(line), parent)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
