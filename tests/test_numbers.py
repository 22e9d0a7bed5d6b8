"""Number normalisation and the network check (fast path equal to plain phonenumbers)."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType

from sftpsms.numbers import NetworkDirectory, is_valid_mobile, normalise_msisdn


@pytest.mark.parametrize("raw", ["0831234567", "+27 83 123 4567", "0027831234567", "27831234567", "083-123-4567", "(083) 123 4567"])
def test_za_spellings_normalise_to_e164_digits(raw: str) -> None:
    assert normalise_msisdn(raw, "ZA") == "27831234567"


@pytest.mark.parametrize("raw", ["", "abc", "12", "+27abc", "0083"])
def test_non_numbers_normalise_to_none(raw: str) -> None:
    assert normalise_msisdn(raw, "ZA") is None


def test_national_number_uses_the_account_country() -> None:
    assert normalise_msisdn("07400123456", "GB") == "447400123456"


def test_valid_za_mobile_has_a_network() -> None:
    assert NetworkDirectory().has_network("27831234567")


def test_placeholder_number_has_no_network() -> None:
    assert normalise_msisdn("1111111111", "ZA") == "1111111111"
    assert not NetworkDirectory().has_network("1111111111")


def test_route_prefix_gives_a_network() -> None:
    assert not NetworkDirectory().has_network("9995550001")
    assert NetworkDirectory(["9995"]).has_network("9995550001")


def test_fixed_line_has_no_network() -> None:
    assert not NetworkDirectory().has_network("27211234567")  # Cape Town landline


def _plain(e164: str) -> bool:
    try:
        number = phonenumbers.parse("+" + e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


def test_fast_path_agrees_with_plain_phonenumbers_across_countries() -> None:
    rng = random.Random(20261125)
    codes = ["27", "1", "44", "39", "49", "234", "254", "91", "55", "61", "33", "86", "7", "81"]
    checked = 0
    for code in codes:
        for _ in range(400):
            number = code + "".join(rng.choice("0123456789") for _ in range(rng.randint(6, 12)))
            assert is_valid_mobile(number) == _plain(number), number
            checked += 1
    # Also known-valid mobiles, so the True side is exercised, not only random noise.
    for region in ("ZA", "US", "GB", "IT", "DE", "NG", "KE", "IN", "BR", "AU"):
        example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
        e164 = f"{example.country_code}{phonenumbers.national_significant_number(example)}"
        assert is_valid_mobile(e164) and _plain(e164), region
    assert checked == 400 * len(codes)


def test_fast_path_agrees_with_plain_phonenumbers_for_every_region() -> None:
    rng = random.Random(7)
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        code = phonenumbers.country_code_for_region(region)
        for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                e164 = f"{example.country_code}{phonenumbers.national_significant_number(example)}"
                assert is_valid_mobile(e164) == _plain(e164), (region, kind, e164)
        for _ in range(20):
            number = f"{code}" + "".join(rng.choice("0123456789") for _ in range(rng.randint(7, 10)))
            assert is_valid_mobile(number) == _plain(number), (region, number)
