"""SMPP delivery receipts: the text an SMSC puts in a receipt's short_message (SMPP v3.4 appendix B).

    id:0A1B2C sub:001 dlvrd:001 submit date:2611251043 done date:2611251044 stat:DELIVRD err:000 text:Hello

Field names are matched case-insensitively and in any order; "submit date" and "done date" hold a
space, and `text:` (the start of the message) runs to the end, so it is cut off first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_FIELD = re.compile(r"(id|sub|dlvrd|submit date|done date|stat|err):(\S*)", re.IGNORECASE)
_TEXT = re.compile(r"\btext:", re.IGNORECASE)


class ReceiptUnreadable(ValueError):
    """A receipt without an id or a status: nothing to match it to."""


@dataclass(frozen=True)
class SmppReceipt:
    message_id: str  # the SMSC's id for the message (or part), as written in the receipt
    stat: str  # the SMSC's status word: DELIVRD, UNDELIV, EXPIRED, REJECTD, ...
    error: str | None = None  # the "err:" code, None when absent or all zeros
    done: datetime | None = None  # "done date", when present and readable (UTC assumed)


def _parse_date(value: str) -> datetime | None:
    """YYMMDDhhmm (v3.4) or YYMMDDhhmmss (a common extension); None when unreadable."""
    layouts = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S"}  # by length: strptime alone is too lenient
    if len(value) not in layouts or not value.isdigit():
        return None
    try:
        return datetime.strptime(value, layouts[len(value)]).replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_receipt(text: str) -> SmppReceipt:
    """The id, status, error and done date of a receipt's text. Raises ReceiptUnreadable."""
    head = _TEXT.split(text, maxsplit=1)[0]
    fields = {name.lower(): value for name, value in _FIELD.findall(head)}
    message_id, stat = fields.get("id", ""), fields.get("stat", "")
    if not message_id or not stat:
        raise ReceiptUnreadable(f"receipt without id or stat: {text[:80]!r}")
    error = fields.get("err") or None
    if error is not None and not error.strip("0"):
        error = None
    done = _parse_date(fields["done date"]) if "done date" in fields else None
    return SmppReceipt(message_id=message_id, stat=stat, error=error, done=done)
