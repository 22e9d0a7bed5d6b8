"""GSM 03.38: the default alphabet and its extension table, septet counts and SMS parts."""

from __future__ import annotations

import re
from bisect import bisect_left

# The 128 characters of the default alphabet, in code-point order (0x1B is the escape to the
# extension table and is not a character of its own; it is shown here as a placeholder).
BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION = "\f^{}\\[~]|€"  # each costs two septets: the escape and itself
assert len(BASIC) == 128 and len(EXTENSION) == 10

SINGLE_PART_SEPTETS = 160
CONCATENATED_PART_SEPTETS = 153  # 7 septets of each part go to the concatenation header

_BASIC_SET = frozenset(BASIC) - {"\x1b"}
_EXTENSION_SET = frozenset(EXTENSION)
_NOT_GSM = re.compile("[^" + re.escape("".join(sorted(_BASIC_SET | _EXTENSION_SET))) + "]")
_EXTENSION_RE = re.compile("[" + re.escape(EXTENSION) + "]")
# Deleting every ASCII byte that is not an extension character leaves the extension characters:
# bytes.translate does that in C, about twice as fast as a regex findall.
_ASCII_NOT_EXTENSION = bytes(b for b in range(128) if chr(b) not in _EXTENSION_SET)


def find_non_gsm(text: str) -> str | None:
    """The first character that GSM 03.38 cannot encode, or None."""
    # Printable ASCII is all GSM but the backtick: most messages are decided without a regex.
    if text.isascii() and text.isprintable():
        return "`" if "`" in text else None
    match = _NOT_GSM.search(text)
    return match.group() if match else None


def septet_count(text: str) -> int:
    """Septets to send `text` (which must be GSM): one per character, two per extension one."""
    if text.isascii():
        return len(text) + len(text.encode("ascii").translate(None, _ASCII_NOT_EXTENSION))
    return len(text) + len(_EXTENSION_RE.findall(text))


def _part_ends(text: str) -> list[int]:
    """Where each concatenated part ends: as many characters as fit in 153 septets, so an escape
    pair that would straddle a boundary moves whole into the next part."""
    extensions = [match.start() for match in _EXTENSION_RE.finditer(text)]
    ends: list[int] = []
    start = 0
    while start < len(text):
        # Each character costs at least one septet, so the part ends at start + 153 at the latest;
        # drop characters from the end until the extension characters inside fit too.
        end = min(start + CONCATENATED_PART_SEPTETS, len(text))
        first, after = bisect_left(extensions, start), bisect_left(extensions, end)
        while end - start + after - first > CONCATENATED_PART_SEPTETS:
            end -= 1
            if after > first and extensions[after - 1] == end:
                after -= 1
        ends.append(end)
        start = end
    return ends


def split_parts(text: str) -> list[str]:
    """The parts a message is sent in: itself up to 160 septets, else parts of up to 153 septets.
    An escape pair is never split across two parts."""
    if not text:
        return []
    if septet_count(text) <= SINGLE_PART_SEPTETS:
        return [text]
    parts: list[str] = []
    start = 0
    for end in _part_ends(text):
        parts.append(text[start:end])
        start = end
    return parts


def count_parts(text: str) -> int:
    """How many SMS (and credits) `text` takes; 0 for empty text. Agrees with split_parts."""
    septets = septet_count(text)
    if septets == 0:
        return 0
    if septets <= SINGLE_PART_SEPTETS:
        return 1
    if septets == len(text):  # no extension characters: nothing can straddle a boundary
        return -(-septets // CONCATENATED_PART_SEPTETS)
    return len(_part_ends(text))
