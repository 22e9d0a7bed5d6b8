"""Key matching and value coercion for upload files, where keys and scalars come in many spellings."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from functools import lru_cache

from sftpsms.errors import ErrorCode, FileRejected

_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})
# A header field has no business being astronomically large; refusing early also keeps int() of a
# huge-exponent Decimal (1E+999999) from building a million-digit number.
_MAX_INTEGER_DIGITS = 18
# A number written with an exponent is spelt out in full as text (1E+3 -> "1000"): past this many
# digits it is refused rather than built (1e999999999 would be a billion digits).
MAX_TEXT_DIGITS = 64


# A file spells its keys a handful of ways, a million times over: cache the folding. Bounded,
# since a hostile file may invent a new key per contact.
@lru_cache(maxsize=1024)
def normalise_key(key: str) -> str:
    """`Message_Template`, `message_template` and `messageTemplate` all become `messagetemplate`."""
    return key.replace("_", "").casefold()


def describe(value: object) -> str:
    """A value as a user would recognise it from their JSON, for error details."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if value is None or isinstance(value, bool | int | str):
        return json.dumps(value, ensure_ascii=False)
    return type(value).__name__


def coerce_int(value: object, field: str) -> int:
    """A whole number given as a JSON number (1, 1.0) or as a string ("1")."""
    # bool first: True is an int to Python, but `"Max_Errors": true` is a mistake, not 1.
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return value
    elif isinstance(value, Decimal | float):
        number = Decimal(value) if isinstance(value, float) else value
        if number.is_finite() and number == number.to_integral_value():
            if number.adjusted() < _MAX_INTEGER_DIGITS:
                return int(number)
    elif isinstance(value, str):
        text = value.strip()
        if _INTEGER_TEXT.fullmatch(text) and len(text.lstrip("+-")) <= _MAX_INTEGER_DIGITS:
            return int(text)
    raise FileRejected(ErrorCode.PARSE_ERROR, f"{field} must be a whole number, got {describe(value)}")


def coerce_bool(value: object, field: str) -> bool:
    """true/false in any case, as a JSON boolean, a string, 1/0 or yes/no."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        word = value.strip().casefold()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise FileRejected(ErrorCode.PARSE_ERROR, f"{field} must be true or false, got {describe(value)}")


def coerce_str(value: object, field: str) -> str:
    """Text; a JSON number becomes its decimal digits (msisdn 27831234567 -> "27831234567")."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        # Through repr so 0.1 stays "0.1" rather than the binary expansion Decimal(0.1) would give.
        return format(Decimal(repr(value)), "f")
    if isinstance(value, Decimal) and value.is_finite():
        if max(value.adjusted() + 1, -int(value.as_tuple().exponent)) > MAX_TEXT_DIGITS:
            raise FileRejected(
                ErrorCode.PARSE_ERROR, f"{field} must be a string, got {describe(value)} (over {MAX_TEXT_DIGITS} digits as text)"
            )
        # "f" spells 1E+3 as 1000: digits as the user meant them, never scientific notation.
        return format(value, "f")
    raise FileRejected(ErrorCode.PARSE_ERROR, f"{field} must be a string, got {describe(value)}")
