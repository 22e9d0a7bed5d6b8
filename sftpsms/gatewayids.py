"""Matching delivery receipts to messages: gateway ids in any spelling, SMSC status words.

SMSCs are inconsistent about the id they return in submit_sm_resp and the one they write in the
receipt: one is hex and the other decimal, letter case differs, leading zeros come and go. Each id
is turned into a small set of keys; a receipt matches a submission when their key sets meet.
The exact (case-folded, zero-stripped) spelling is always the first key, so an exact match wins.
"""

from __future__ import annotations

import string

_HEX = frozenset(string.hexdigits)
_DEC = frozenset(string.digits)
# Ids longer than this are opaque tokens (uuids, base64), not numbers: matched by spelling only.
MAX_NUMERIC_ID = 32


def match_keys(gateway_id: str) -> tuple[str, ...]:
    """The keys an id is known by: its folded spelling, then its value read as hex and as decimal
    (each written in decimal), without repeats.

    >>> match_keys("0A1B")
    ('a1b', '2587')
    >>> match_keys("2587")
    ('2587', '9607')
    """
    folded = gateway_id.strip().lower()
    stripped = folded.lstrip("0") or ("0" if folded else "")
    keys = [stripped]
    if 0 < len(folded) <= MAX_NUMERIC_ID:
        chars = set(folded)
        if chars <= _HEX:
            keys.append(str(int(folded, 16)))
        if chars <= _DEC:
            keys.append(str(int(folded, 10)))
    return tuple(dict.fromkeys(keys))


# SMPP v3.4 appendix B "stat" words and what other peers send, to our final statuses.
_FINAL = {
    "delivrd": "delivered",
    "delivered": "delivered",
    "undeliv": "failed",
    "undelivered": "failed",
    "rejectd": "failed",
    "rejected": "failed",
    "deleted": "failed",
    "unknown": "failed",
    "failed": "failed",
    "expired": "expired",
}
# Not final: the message is still on its way; nothing is recorded.
_INTERMEDIATE = frozenset({"acceptd", "accepted", "enroute", "en_route", "buffered", "sent", "submitted"})

FINAL_STATUSES = ("delivered", "failed", "expired")


def final_status(word: str) -> str | None:
    """Our final status for a peer's status word, or None while the message is still on its way.
    Raises ValueError for a word nobody defined (a peer bug to log, not to guess at)."""
    key = word.strip().lower()
    if key in _FINAL:
        return _FINAL[key]
    if key in _INTERMEDIATE:
        return None
    raise ValueError(f"unknown delivery status {word!r}")


def is_opt_out(text: str, keywords: tuple[str, ...]) -> bool:
    """A reply whose first word is one of the keywords (case-insensitive): "STOP", "stop please"."""
    words = text.strip().split()
    return bool(words) and words[0].strip(".!").upper() in {k.upper() for k in keywords}
