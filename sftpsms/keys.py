"""Keys that match case-insensitively ignoring `_`, and values that may come as strings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sftpsms.errors import ErrorCode, FileRejected

TRUE = frozenset({"true", "1", "yes", "y"})
FALSE = frozenset({"false", "0", "no", "n"})


def normalise_key(key: str) -> str:
    return key.replace("_", "").casefold()


def coerce_int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise FileRejected(ErrorCode.PARSE_ERROR, f"{field} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)) and value == int(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise FileRejected(ErrorCode.PARSE_ERROR, f"{field} must be a whole number, not {value!r}")


def coerce_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().casefold() in TRUE | FALSE:
        return value.strip().casefold() in TRUE
    raise FileRejected(ErrorCode.PARSE_ERROR, f"{field} must be true or false, not {value!r}")


def coerce_str(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise FileRejected(ErrorCode.PARSE_ERROR, f"{field} must be text, not {value!r}")
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(int(value))
    return str(value)
