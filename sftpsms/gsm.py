"""GSM 03.38: the default alphabet and its extension table, septet counts and SMS parts."""

from __future__ import annotations

import re

# The 128 characters of the default alphabet, in code-point order (0x1B is the escape to the
# extension table and is not a character of its own; it is shown here as a placeholder).
BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION = "\f^{}\\[~]|€"  # each costs two septets: the escape and itself
assert len(BASIC) == 128 and len(EXTENSION) == 10

SINGLE_PART_SEPTETS = 160
CONCATENATED_PART_SEPTETS = 153

_BASIC_SET = frozenset(BASIC) - {"\x1b"}
_EXTENSION_SET = frozenset(EXTENSION)
_NOT_GSM = re.compile("[^" + re.escape("".join(sorted(_BASIC_SET | _EXTENSION_SET))) + "]")
_EXTENSION_RE = re.compile("[" + re.escape(EXTENSION) + "]")


def find_non_gsm(text: str) -> str | None:
    """The first character that GSM 03.38 cannot encode, or None."""
    match = _NOT_GSM.search(text)
    return match.group() if match else None


def septet_count(text: str) -> int:
    return len(text) + len(_EXTENSION_RE.findall(text))


def _costs(text: str) -> list[int]:
    return [2 if char in _EXTENSION_SET else 1 for char in text]


def split_parts(text: str) -> list[str]:
    """The parts a message is sent in. An escape pair is never split across two parts."""
    if not text:
        return []
    if septet_count(text) <= SINGLE_PART_SEPTETS:
        return [text]
    parts: list[str] = []
    start = used = 0
    for position, cost in enumerate(_costs(text)):
        if used + cost > CONCATENATED_PART_SEPTETS:
            parts.append(text[start:position])
            start, used = position, 0
        used += cost
    parts.append(text[start:])
    return parts


def count_parts(text: str) -> int:
    septets = septet_count(text)
    if septets == 0:
        return 0
    if septets <= SINGLE_PART_SEPTETS:
        return 1
    if not _EXTENSION_RE.search(text):
        return -(-septets // CONCATENATED_PART_SEPTETS)
    return len(split_parts(text))
