"""GSM 03.38: the default alphabet and its extension table, septet counts, SMS parts, and the bytes
of each part as an SMSC takes them (GSM septets or UCS-2, with a concatenation header)."""

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

# Extension characters' codes after the 0x1B escape (3GPP TS 23.038 6.2.1.1).
EXTENSION_CODES = (0x0A, 0x14, 0x28, 0x29, 0x2F, 0x3C, 0x3D, 0x3E, 0x40, 0x65)
assert len(EXTENSION_CODES) == len(EXTENSION)

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


# --- Encoding for the wire -------------------------------------------------------------------------

DATA_CODING_GSM = 0  # SMPP data_coding: the SMSC default alphabet (GSM 03.38), one septet per octet
DATA_CODING_UCS2 = 8  # SMPP data_coding: UCS-2 (UTF-16BE on the wire, surrogate pairs kept whole)
SINGLE_PART_UCS2 = 70  # UTF-16 code units in a single-part UCS-2 message
CONCATENATED_PART_UCS2 = 67  # 6 octets of each part go to the concatenation header
MAX_PARTS = 255  # the concatenation header counts parts in one octet

_ENCODE = {char: bytes([code]) for code, char in enumerate(BASIC) if char != "\x1b"}
_ENCODE.update({char: bytes([0x1B, code]) for char, code in zip(EXTENSION, EXTENSION_CODES, strict=True)})
_DECODE_EXTENSION = {code: char for char, code in zip(EXTENSION, EXTENSION_CODES, strict=True)}


GSM, UCS2 = "gsm", "ucs2"  # how a message's text is sent (its parts are counted so)


def text_encoding(text: str) -> str:
    """GSM 03.38 when every character is in it, else UCS-2 (what encode_parts sends)."""
    return GSM if find_non_gsm(text) is None else UCS2


def message_parts(text: str, *, unicode: bool) -> tuple[str, int]:
    """The encoding and part count of a message: GSM text stays GSM; other text is UCS-2 when
    the account allows it (`unicode`), else NotGsmText names the first character GSM lacks."""
    bad = find_non_gsm(text)
    if bad is None:
        return GSM, count_parts(text)
    if not unicode:
        raise NotGsmText(f"character {bad!r} (U+{ord(bad):04X}) is not in the GSM 03.38 alphabet")
    return UCS2, count_ucs2_parts(text)


class NotGsmText(ValueError):
    """The text has a character GSM 03.38 cannot encode (use UCS-2)."""


def encode_gsm(text: str) -> bytes:
    """GSM 03.38 septets, one per octet (SMPP data_coding 0): extension characters are the escape
    0x1B and their code. Raises NotGsmText for a character outside the alphabet."""
    try:
        return b"".join([_ENCODE[char] for char in text])
    except KeyError as error:
        raise NotGsmText(f"not in GSM 03.38: {error.args[0]!r}") from None


def decode_gsm(septets: bytes) -> str:
    """The text of unpacked GSM 03.38 septets (the inverse of encode_gsm)."""
    chars: list[str] = []
    escaped = False
    for code in septets:
        if escaped:
            chars.append(_DECODE_EXTENSION.get(code, BASIC[code & 0x7F]))
            escaped = False
        elif code == 0x1B:
            escaped = True
        else:
            chars.append(BASIC[code & 0x7F])
    return "".join(chars)


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Septets packed eight into seven octets (GSM 03.38 6.1.2.1.1), the form used on the air
    interface and by SMSCs that want packed data. `fill_bits` leading zero bits align the first
    septet after a user data header (1 after a 6-octet concatenation header)."""
    value = 0
    bits = fill_bits
    for index, septet in enumerate(septets):
        value |= (septet & 0x7F) << (fill_bits + 7 * index)
        bits += 7
    return value.to_bytes((bits + 7) // 8, "little")


def unpack_septets(packed: bytes, count: int, fill_bits: int = 0) -> bytes:
    """`count` septets out of packed octets (the inverse of pack_septets)."""
    value = int.from_bytes(packed, "little") >> fill_bits
    return bytes((value >> (7 * index)) & 0x7F for index in range(count))


def ucs2_units(text: str) -> int:
    """UTF-16 code units of `text`: one per character, two for one outside the basic plane
    (an emoji is a surrogate pair)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def count_ucs2_parts(text: str) -> int:
    """How many SMS (and credits) `text` takes as UCS-2; 0 for empty text. Agrees with
    split_ucs2: 70 code units for one part, else parts of up to 67, and a surrogate pair that
    would straddle a boundary moves whole into the next part."""
    units = ucs2_units(text)
    if units <= SINGLE_PART_UCS2:
        return 1 if text else 0
    if units == len(text):  # no surrogate pairs: nothing can straddle a boundary
        return -(-units // CONCATENATED_PART_UCS2)
    return len(split_ucs2(text))


def split_ucs2(text: str) -> list[str]:
    """UCS-2 parts: up to 70 code units alone, else parts of up to 67; a character outside the
    basic plane (two code units) never straddles two parts."""
    units = ucs2_units(text)
    if units <= SINGLE_PART_UCS2:
        return [text] if text else []
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for char in text:
        cost = 2 if ord(char) > 0xFFFF else 1
        if used + cost > CONCATENATED_PART_UCS2:
            parts.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += cost
    parts.append("".join(current))
    return parts


def concatenation_header(reference: int, total: int, number: int) -> bytes:
    """The 8-bit concatenated-SMS user data header (IEI 0x00): the same reference for every part
    of one message, the number of parts, and this part's number from 1."""
    return bytes((0x05, 0x00, 0x03, reference & 0xFF, total, number))


def encode_parts(text: str, reference: int) -> tuple[int, list[bytes]]:
    """The SMPP data_coding and the short_message octets of each part: GSM septets when the text
    is all GSM 03.38, else UCS-2; a message of several parts gets a concatenation header on each
    (the caller sets the UDHI bit in esm_class). Raises ValueError beyond 255 parts."""
    if find_non_gsm(text) is None:
        coding, texts = DATA_CODING_GSM, split_parts(text)
        payloads = [encode_gsm(part) for part in texts]
    else:
        coding, texts = DATA_CODING_UCS2, split_ucs2(text)
        payloads = [part.encode("utf-16-be") for part in texts]
    if len(payloads) > MAX_PARTS:
        raise ValueError(f"a message of {len(payloads)} parts is longer than {MAX_PARTS} parts")
    if len(payloads) <= 1:
        return coding, payloads
    total = len(payloads)
    return coding, [
        concatenation_header(reference, total, number) + payload
        for number, payload in enumerate(payloads, start=1)
    ]
