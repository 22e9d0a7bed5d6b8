"""The SMPP gateway's durable memory of what the SMSC accepted, so a restart never sends twice.

The dispatcher records MessageSubmitted events in groups (every quarter second at most); a process
that dies between the SMSC's submit_sm_resp and that write would, without this journal, send the
message again when it comes back. So every accepted part is one line appended with one write(2)
(the kernel has it once write returns: it survives a SIGKILL, not a power cut) naming the message,
its concatenation reference, its number of parts and the gateway ids accepted so far. A message is
done when it has an id for every part; one interrupted after some parts resumes from the next part
with the same reference.

Growth is bounded: the file is rewritten (the latest line per message, the last `keep` of them, none
older than `keep_for`) when the gateway starts and whenever it has grown to twice that.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

log = logging.getLogger(__name__)

JOURNAL_NAME = "submitted.jsonl"
KEEP_FOR = timedelta(days=7)  # a message not re-submitted within a week never will be
KEEP = 100_000  # messages remembered (done or partly sent), the newest


@dataclass(frozen=True)
class Progress:
    """How far one message got: its concatenation reference and the ids of its accepted parts."""

    reference: int
    parts: int
    ids: tuple[str, ...]
    at: float  # Unix seconds of the last accepted part

    @property
    def done(self) -> bool:
        return len(self.ids) >= self.parts


class SubmitJournal:
    """An append-only file of accepted parts, loaded (and compacted) when opened.

    Resource handling: the file descriptor is opened here and closed by `close`; recording after
    that raises OSError.
    """

    def __init__(self, directory: Path, *, now: datetime, keep: int = KEEP, keep_for: timedelta = KEEP_FOR) -> None:
        self.keep = keep
        self.keep_for = keep_for
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / JOURNAL_NAME
        self._messages: OrderedDict[UUID, Progress] = OrderedDict()
        self.reference = 0  # the last concatenation reference used, so a restart does not reuse it at once
        self._lines = self._load(now)
        self._fd = -1
        self._compact()

    # --- reading -------------------------------------------------------------------------------

    def get(self, message_id: UUID) -> Progress | None:
        return self._messages.get(message_id)

    def __len__(self) -> int:
        return len(self._messages)

    def _load(self, now: datetime) -> int:
        """Read the file; the latest line per message wins. Returns the number of lines read."""
        if not self.path.exists():
            return 0
        oldest = (now - self.keep_for).timestamp()
        lines = 0
        with self.path.open("rb") as journal:
            for raw in journal:
                lines += 1
                try:
                    entry = json.loads(raw)
                    message_id = UUID(entry["m"])
                    progress = Progress(
                        reference=int(entry["r"]),
                        parts=int(entry["n"]),
                        ids=tuple(str(part) for part in entry["ids"]),
                        at=float(entry["at"]),
                    )
                except (ValueError, KeyError, TypeError):
                    # A line torn by a crash mid-write (only ever the last one): that part's id is lost.
                    log.warning("journal=%s code=SMPP_JOURNAL_LINE line=%d detail=unreadable", self.path, lines)
                    continue
                if progress.parts > 1:
                    self.reference = progress.reference
                if progress.at < oldest:
                    continue
                self._messages[message_id] = progress
                self._messages.move_to_end(message_id)
        while len(self._messages) > self.keep:
            self._messages.popitem(last=False)
        return lines

    # --- writing -------------------------------------------------------------------------------

    def record(self, message_id: UUID, reference: int, parts: int, ids: tuple[str, ...], now: datetime) -> Progress:
        """Remember that the SMSC accepted `ids` (the first len(ids) parts) of a message."""
        progress = Progress(reference=reference, parts=parts, ids=ids, at=now.timestamp())
        line = json.dumps(
            {"m": str(message_id), "r": reference, "n": parts, "ids": list(ids), "at": round(progress.at, 3)},
            separators=(",", ":"),
        )
        self._messages[message_id] = progress  # remembered in this process even if the write fails
        self._messages.move_to_end(message_id)
        if len(self._messages) > self.keep:
            self._messages.popitem(last=False)
        if self._fd < 0:
            raise OSError(f"{self.path} is closed")
        os.write(self._fd, line.encode() + b"\n")  # one write(2): the whole line or, at a crash, a torn tail
        self._lines += 1
        if self._lines > 2 * self.keep:
            self._compact()
        return progress

    def _compact(self) -> None:
        """Rewrite the file as what is remembered, one line per message, when it holds more."""
        if self._lines > len(self._messages):
            temporary = self.path.with_suffix(".tmp")
            with temporary.open("w") as out:
                for message_id, progress in self._messages.items():
                    entry = {"m": str(message_id), "r": progress.reference, "n": progress.parts}
                    out.write(json.dumps({**entry, "ids": list(progress.ids), "at": progress.at}, separators=(",", ":")))
                    out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            os.replace(temporary, self.path)
            self._lines = len(self._messages)
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
