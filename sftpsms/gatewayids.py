"""Matching delivery receipts to messages: gateway ids in any spelling, SMSC status words.

SMSCs are inconsistent about the id they return in submit_sm_resp and the one they write in the
receipt: one is hex and the other decimal, letter case differs, leading zeros come and go. A
submitted id is kept under one key (folded, zeros dropped); a receipt's id is looked up under up
to three (its own spelling, and its value in the other base), the exact spelling first, so an exact
match wins.
"""

from __future__ import annotations

import string

_HEX = frozenset(string.hexdigits)
_DEC = frozenset(string.digits)
# Ids longer than this are opaque tokens (uuids, base64), not numbers: matched by spelling only.
MAX_NUMERIC_ID = 32


def stored_key(gateway_id: str) -> str:
    """The one key a submitted id is kept under: folded to lower case, leading zeros dropped."""
    folded = gateway_id.strip().lower()
    return folded.lstrip("0") or ("0" if folded else "")


def lookup_keys(gateway_id: str) -> tuple[str, ...]:
    """The stored keys a receipt's id may name: its own spelling, then — when it reads as a number —
    its value written the other way (hex read as hex and written in decimal; decimal read as
    decimal and written in hex), so either side may use either base. Without repeats.

    >>> lookup_keys("0A1B")
    ('a1b', '2587')
    >>> lookup_keys("2587")
    ('2587', 'a1b', '9607')
    """
    key = stored_key(gateway_id)
    keys = [key]
    if 0 < len(key) <= MAX_NUMERIC_ID:
        chars = set(key)
        if chars <= _DEC:
            keys.append(format(int(key, 10), "x"))
        if chars <= _HEX:
            keys.append(str(int(key, 16)))
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
