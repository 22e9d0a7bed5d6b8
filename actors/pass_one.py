"""Pass 1 of a big file split across processes: the same plan and spool, in the same order, sooner.

Validating a contact is pure Python, so threads would take turns on the GIL; processes do not.
The contacts are split by index into consecutive parts that start on opt-out lookup batches: this
process checks the first part itself while a worker process (`python -m actors.pass_one`, which
imports only the pure domain and sqlite3) checks each later one, looks its numbers up in the
opt-outs and writes, per batch, a sftpsms.intake.Tally (counts, errors, spool lines) to a part
file. plan_file then counts the workers' batches in order after its own part, so Max_Errors, the
first errors and the spool come out exactly as from a single pass, at little cost to this process.

Errors stay where they were: a worker that meets a contact-level FileRejected (a contact with no
message and no template) or broken JSON stops there and reports it after its batches, which is
where a single pass would have raised it; every worker parses the file from its start, so broken
JSON before its part fails it the same way. A worker that dies otherwise is an internal error.

Memory: a worker holds the domain modules and one parser (about 20 MB), so the number of
processes is kept small (SFTPSMS_PASS_ONE_PROCESSES, default 2 = this process and one worker).
Files under SPLIT_MIN_BYTES, a setting of 1, or a worker that cannot start take the single
in-process pass.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
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
from sftpsms.numbers import NetworkDirectory

log = logging.getLogger(__name__)

OptOutSource = tuple[Path, str]  # the read-model database and the account whose opt-outs count

SPLIT_MIN_BYTES = 8 << 20  # about 70 000 contacts: below this a worker's start-up is not worth it
# This process's part relative to a worker's: it also reads every other part back (opt-out
# lookups, counts, the spool) while a worker also parses the contacts before its part; measured
# with py-spy on 300 000 contacts, about equal parts finish together.
OWN_SHARE = 0.95
WAIT_FOR_WORKER = 0.005  # seconds between looks at a part file that is still being written


def pass_one_checker(
    processes: int, *, parts: Path, optouts: OptOutSource, min_bytes: int = SPLIT_MIN_BYTES
) -> CheckContacts:
    """The way plan_file should check a file's contacts with `processes` processes in all. The
    workers' part files are `<parts>.part1`, ... (one name per file being processed); they look
    numbers up in the read-model database and account of `optouts`, as plan_file's own lookup does."""
    if processes <= 1:
        return check_all

    def check_split(path: Path, header: Header, checker: ContactChecker) -> Generator[Outcome | Tally, None, None]:
        if path.stat().st_size < min_bytes:
            return check_all(path, header, checker)
        return _check_split(path, header, checker, processes, parts, optouts)

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


def _check_split(
    path: Path, header: Header, checker: ContactChecker, processes: int, parts: Path, optouts: OptOutSource
) -> Generator[Outcome | Tally, None, None]:
    bounds = part_bounds(estimate_contacts(path, header), processes)
    workers: list[_Worker] = []
    try:
        for k, start in enumerate(bounds):
            stop = bounds[k + 1] if k + 1 < len(bounds) else None
            try:
                part = parts.with_name(f"{parts.name}.part{k + 1}")
                workers.append(_Worker.start(path, header, checker, optouts, start, stop, part))
            except OSError as error:  # no processes here (limits, sandbox): one pass in this thread
                log.warning("pass one in one process: cannot start a worker (%s)", error)
                for worker in workers:
                    worker.stop()
                yield from check_all(path, header, checker)
                return
        for raw in iter_contacts(path, header, stop=bounds[0]):
            yield checker.check(raw)
        for worker in workers:
            yield from worker.tallies()
    finally:
        for worker in workers:
            worker.stop()


class _Worker:
    """One worker process and the part file it writes."""

    def __init__(self, process: subprocess.Popen[bytes], part: Path) -> None:
        self.process = process
        self.part = part

    @classmethod
    def start(
        cls,
        path: Path,
        header: Header,
        checker: ContactChecker,
        optouts: OptOutSource,
        start: int,
        stop: int | None,
        part: Path,
    ) -> _Worker:
        part.parent.mkdir(parents=True, exist_ok=True)
        # A new file, never the old one truncated: a worker orphaned by a crash before a restart
        # may still be writing to that one.
        part.unlink(missing_ok=True)
        part.write_bytes(b"")
        job = {
            "path": str(path),
            "header": asdict(header),
            "country": checker.country,
            "routes": list(checker.networks.prefixes),
            "max_parts": checker.max_parts,
            "optouts": [str(optouts[0]), optouts[1]],
            "parent": os.getpid(),
            "start": start,
            "stop": stop,
            "part": str(part),
        }
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "actors.pass_one", json.dumps(job)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
            )
        except OSError:
            part.unlink(missing_ok=True)
            raise
        return cls(process, part)

    def tallies(self) -> Iterator[Tally]:
        """The part's batches as the worker writes them, then its verdict."""
        with self.part.open("rb") as part:
            lines = _follow(part, self.process)
            for head in lines:
                batch = Tally(**orjson.loads(head))
                batch.lines = [next(lines).decode() for _ in range(batch.contacts)]
                yield batch
        assert self.process.stdout is not None
        verdict = self.process.stdout.read()
        if self.process.wait() != 0 or not verdict:
            raise RuntimeError(f"pass-one worker failed with exit status {self.process.returncode}")
        result = json.loads(verdict)
        if result.get("code") is not None:
            raise FileRejected(ErrorCode(result["code"]), result["detail"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.part.unlink(missing_ok=True)


def _follow(part: IO[bytes], process: subprocess.Popen[bytes]) -> Iterator[bytes]:
    """Complete lines of a file another process is appending to, until that process has ended."""
    rest = b""
    while True:
        chunk = part.read(1 << 16)
        if chunk:
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        elif process.poll() is None:
            time.sleep(WAIT_FOR_WORKER)
        else:
            chunk = part.read()  # whatever it wrote after the last look, then it is done
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
    if rest:
        raise RuntimeError("pass-one worker left a partial line")


def _work(job: dict[str, Any]) -> dict[str, Any]:
    """In the worker process: check one part, write its batches, return the verdict."""
    header = Header(**{**job["header"], "warnings": tuple(job["header"]["warnings"])})
    checker = ContactChecker(
        template=header_template(header),
        country=job["country"],
        networks=NetworkDirectory(job["routes"]),
        max_parts=job["max_parts"],
    )
    database, account = job["optouts"]
    verdict: dict[str, Any] = {"code": None}
    with closing(sqlite3.connect(database, timeout=30)) as models, open(job["part"], "wb") as out:  # noqa: PTH123

        def write(outcomes: list[Outcome]) -> None:
            if os.getppid() != job["parent"]:  # the server is gone: nobody will read this part
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
    return verdict


if __name__ == "__main__":
    sys.stdout.write(json.dumps(_work(json.loads(sys.argv[1]))))
