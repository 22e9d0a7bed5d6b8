"""MSISDNs: normalising what users write to E.164 digits, and deciding whether a number has a
network (a valid mobile number by libphonenumber's metadata, or a configured route prefix)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache, lru_cache
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber, PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, NumberParseException

_SEPARATORS = re.compile(r"[\s\-.()/]")
MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
MIN_DIGITS, MAX_DIGITS = 7, 15


def _valid(number: PhoneNumber) -> str | None:
    if phonenumbers.is_valid_number(number):
        return f"{number.country_code}{phonenumbers.national_significant_number(number)}"
    return None


def _canonical(digits: str) -> str:
    """The E.164 form of international digits that are a valid number (trunk prefixes dropped)."""
    if _direct_mobile(digits):
        return digits
    return _valid(phonenumbers.parse("+" + digits, None)) or digits


def normalise_msisdn(raw: str, default_region: str) -> str | None:
    """E.164 digits without '+', or None when `raw` is not a phone number at all."""
    text = _SEPARATORS.sub("", str(raw))
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("00"):
        digits = text[2:]
    else:
        digits = ""
    if digits:
        if not digits.isdigit() or not MIN_DIGITS <= len(digits) <= MAX_DIGITS + 1:
            return None
        if is_valid_mobile(digits):
            return _canonical(digits)
        return digits if len(digits) <= MAX_DIGITS else None
    if not text.isdigit() or not MIN_DIGITS <= len(text) <= MAX_DIGITS + 1:
        return None
    # The common case, cheaply: the account's own country code and a valid mobile number.
    country = phonenumbers.country_code_for_region(default_region)
    if country and text.startswith(str(country)) and is_valid_mobile(text):
        return _canonical(text)
    # National format for the account's country first, then international digits without '+'.
    for candidate, region in ((text, default_region), ("+" + text, None)):
        try:
            normalised = _valid(phonenumbers.parse(candidate, region))
        except NumberParseException:
            continue
        if normalised is not None:
            return normalised
    if text.startswith("0") and country:
        return f"{country}{text[1:]}"  # national form of a number that is not valid: no network
    return text if len(text) <= MAX_DIGITS else None


def _split_country_code(e164: str) -> tuple[int, str] | None:
    for length in (1, 2, 3):
        code = int(e164[:length])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            return code, e164[length:]
    return None


def _slow_is_valid_mobile(e164: str) -> bool:
    try:
        number = phonenumbers.parse("+" + e164, None)
    except NumberParseException:
        return False
    return phonenumbers.number_type(number) in MOBILE_TYPES


@lru_cache(maxsize=4096)  # normalise_msisdn and has_network ask about the same number in a row
def is_valid_mobile(e164: str) -> bool:
    """Exactly phonenumbers' `is_valid_number(parse("+" + e164)) and number_type in (MOBILE,
    FIXED_LINE_OR_MOBILE)`, but without `parse` (most of the cost) for plain valid E.164 digits.

    number_type() returns a mobile type only for a number valid in its region (it runs the same
    checks as is_valid_number), so one call decides both. A number the direct construction calls
    invalid gets the full parse (it may strip a national prefix, or keep an Italian leading zero).
    """
    if not e164.isdigit() or not MIN_DIGITS <= len(e164) <= MAX_DIGITS + 1:
        return False
    return _direct_mobile(e164) or _slow_is_valid_mobile(e164)


@lru_cache(maxsize=4096)
def _direct_mobile(e164: str) -> bool:
    """A valid mobile as the digits stand (country code + national number, nothing stripped)."""
    split = _split_country_code(e164)
    if split is None or not split[1] or split[1][0] == "0":
        return False
    code, national = split
    checker = _checker(code)
    if checker is not None:
        return checker.is_mobile(national)
    number = PhoneNumber(country_code=code, national_number=int(national))
    return phonenumbers.number_type(number) in MOBILE_TYPES


class _Desc:
    """One PhoneNumberDesc, compiled once: libphonenumber's _is_number_matching_desc without its
    per-call pattern-cache lookups (a match there is `pattern.match and fullmatch`, i.e. fullmatch)."""

    def __init__(self, desc: Any) -> None:
        pattern = getattr(desc, "national_number_pattern", None) if desc is not None else None
        self.pattern = re.compile(pattern) if pattern else None
        self.lengths = frozenset(desc.possible_length) if desc is not None else frozenset()

    def matches(self, national: str) -> bool:
        if self.pattern is None:
            return False
        if self.lengths and len(national) not in self.lengths:
            return False
        return self.pattern.fullmatch(national) is not None


class _TypeChecker:
    """libphonenumber's _number_type_helper, answering only "is it (fixed line or) mobile?"."""

    def __init__(self, metadata: Any) -> None:
        self.general = _Desc(metadata.general_desc)
        before = (
            _Desc(getattr(metadata, name))
            for name in ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail")
        )
        self.before = [desc for desc in before if desc.pattern is not None]  # empty ones never match
        self.fixed = _Desc(metadata.fixed_line)
        self.mobile = _Desc(metadata.mobile)
        self.same = bool(metadata.same_mobile_and_fixed_line_pattern)

    def is_mobile(self, national: str) -> bool:
        if not self.general.matches(national):
            return False
        if any(desc.matches(national) for desc in self.before):
            return False
        if self.fixed.matches(national):
            return self.same or self.mobile.matches(national)
        return not self.same and self.mobile.matches(national)


@cache
def _checker(code: int) -> _TypeChecker | None:
    """For a country code with one region only (others need libphonenumber's region lookup)."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    if len(regions) != 1:
        return None
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, regions[0])
    return None if metadata is None else _TypeChecker(metadata)


class NetworkDirectory:
    """Which numbers can be sent to: route prefixes first, then libphonenumber's metadata."""

    def __init__(self, route_prefixes: Iterable[str] = ()) -> None:
        self.prefixes = tuple(sorted(set(route_prefixes), key=len, reverse=True))

    def route_for(self, e164: str) -> str | None:
        for prefix in self.prefixes:
            if e164.startswith(prefix):
                return prefix
        return None

    def has_network(self, e164: str) -> bool:
        return self.route_for(e164) is not None or is_valid_mobile(e164)
