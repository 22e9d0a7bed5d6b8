"""Pass 1 of a big file split across processes: the same outcomes, in the same order, sooner.

Validating a contact is pure Python, so threads would take turns on the GIL; processes do not.
The contacts are split by index into consecutive parts: this process checks the first part itself
while a worker process (`python -m actors.pass_one`, which imports only the pure domain) checks
each later one and writes its outcomes, one spool line each, to a part file. The parts are then
read back in order, so `sftpsms.intake.plan_file` sees exactly the stream a single thread would
have produced: its counts, opt-out lookups, Max_Errors and spool are unchanged.

Errors stay where they were: a worker that meets a contact-level FileRejected (a contact with no
message and no template) or broken JSON stops there and reports it after its outcomes, which is
where a single pass would have raised it; every worker parses the file from its start, so broken
JSON before its part fails it the same way. A worker that dies otherwise is an internal error.

Memory: each worker holds only the domain modules and one part's parser state (about 20 MB), so
the number of processes is kept small (SFTPSMS_PASS_ONE_PROCESSES, default 2 = this process and
one worker). Files under SPLIT_MIN_BYTES, a setting of 1, or a worker that cannot start, take the
single in-process pass.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.fileformat import Header, estimate_contacts, iter_contacts
from sftpsms.intake import (
    OPTOUT_LOOKUP_BATCH,
    CheckContacts,
    ContactChecker,
    Outcome,
    check_all,
    header_template,
)
from sftpsms.numbers import NetworkDirectory

log = logging.getLogger(__name__)

SPLIT_MIN_BYTES = 8 << 20  # about 70 000 contacts: below this a worker's start-up is not worth it
# How much faster this process gets through its part than a worker through one: it also reads
# every other part back and does the opt-out lookups and the spool, so it takes a smaller part.
OWN_SHARE = 0.6
WAIT_FOR_WORKER = 0.005  # seconds between looks at a part file that is still being written
WRITE_EVERY = OPTOUT_LOOKUP_BATCH  # outcomes a worker writes at a time


def pass_one_checker(processes: int, *, parts: Path, min_bytes: int = SPLIT_MIN_BYTES) -> CheckContacts:
    """The way plan_file should check a file's contacts with `processes` processes in all; the
    workers' part files are `<parts>.part1`, ... (one name per file being processed)."""
    if processes <= 1:
        return check_all

    def check_split(path: Path, header: Header, checker: ContactChecker) -> Generator[Outcome, None, None]:
        if path.stat().st_size < min_bytes:
            return check_all(path, header, checker)
        return _check_split(path, header, checker, processes, parts)

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
    path: Path, header: Header, checker: ContactChecker, processes: int, parts: Path
) -> Generator[Outcome, None, None]:
    bounds = part_bounds(estimate_contacts(path, header), processes)
    workers: list[_Worker] = []
    try:
        for k, start in enumerate(bounds):
            stop = bounds[k + 1] if k + 1 < len(bounds) else None
            try:
                workers.append(_Worker.start(path, header, checker, start, stop, parts.with_name(f"{parts.name}.part{k + 1}")))
            except OSError as error:  # no processes here (limits, sandbox): one pass in this thread
                log.warning("pass one in one process: cannot start a worker (%s)", error)
                for worker in workers:
                    worker.stop()
                yield from check_all(path, header, checker)
                return
        for raw in iter_contacts(path, header, stop=bounds[0]):
            yield checker.check(raw)
        for worker in workers:
            yield from worker.outcomes()
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
        cls, path: Path, header: Header, checker: ContactChecker, start: int, stop: int | None, part: Path
    ) -> _Worker:
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(b"")
        job = {
            "path": str(path),
            "header": asdict(header),
            "country": checker.country,
            "routes": list(checker.networks.prefixes),
            "max_parts": checker.max_parts,
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

    def outcomes(self) -> Iterator[Outcome]:
        """The part's outcomes as the worker writes them, then its verdict."""
        with self.part.open("rb") as lines:
            yield from (Outcome.from_line(line) for line in _follow(lines, self.process))
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
    """In the worker process: check one part, write its outcomes, return the verdict."""
    header = Header(**{**job["header"], "warnings": tuple(job["header"]["warnings"])})
    checker = ContactChecker(
        template=header_template(header),
        country=job["country"],
        networks=NetworkDirectory(job["routes"]),
        max_parts=job["max_parts"],
    )
    verdict: dict[str, Any] = {"code": None}
    with open(job["part"], "w", encoding="utf-8") as out:  # noqa: PTH123 - a plain text file
        lines: list[str] = []
        try:
            for raw in iter_contacts(Path(job["path"]), header, start=job["start"], stop=job["stop"]):
                lines.append(checker.check(raw).to_line())
                if len(lines) >= WRITE_EVERY:
                    out.write("\n".join(lines) + "\n")
                    out.flush()  # the other process reads the part while it grows
                    lines = []
        except FileRejected as rejection:
            verdict = {"code": str(rejection.code), "detail": rejection.detail}
        if lines:
            out.write("\n".join(lines) + "\n")
    return verdict


if __name__ == "__main__":
    sys.stdout.write(json.dumps(_work(json.loads(sys.argv[1]))))
