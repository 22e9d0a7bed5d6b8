"""Number normalisation and the network check (fast path equal to plain phonenumbers)."""

from __future__ import annotations

import functools
import random
import re

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from sftpsms import numbers
from sftpsms.numbers import (
    NetworkDirectory,
    is_valid_mobile,
    normalise_msisdn,
    own_mobile_reader,
    own_mobile_test,
)

# The countries the brief names, NANP's other big member, and a few with multi-region codes
# (+7 RU/KZ, +44 GB/GG/IM/JE, +39 IT/VA, +61 AU/CC/CX), carrier-code prefixes (BR, AR) or
# rewrite rules (MX, JP).
REGIONS = [
    "ZA",
    "US",
    "CA",
    "GB",
    "IT",
    "DE",
    "NG",
    "KE",
    "IN",
    "BR",
    "AU",
    "RU",
    "KZ",
    "FR",
    "AR",
    "MX",
    "JP",
    "JE",
    "VA",
    "CN",
]
KINDS = [
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.VOIP,
]


def _plain(e164: str) -> bool:
    """The definition in PRODUCT.md §3, straight from phonenumbers."""
    try:
        number = phonenumbers.parse("+" + e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return f"{number.country_code}{phonenumbers.national_significant_number(number)}"


def _near(rng: random.Random, e164: str, code: str) -> str:
    """A number like `e164`: the country code and a few leading digits kept, the rest random,
    sometimes a digit shorter or longer, sometimes with a trunk 0 after the country code."""
    national = e164[len(code) :]
    keep = min(rng.choice([0, 2, 3, 3, 4, 4]), len(national))
    length = max(2, len(national) + rng.choice([0, 0, 0, 0, -1, 1]))
    tail = "".join(rng.choice("0123456789") for _ in range(max(0, length - keep)))
    prefix = "0" if rng.random() < 0.05 else ""
    return code + prefix + national[:keep] + tail


def _sample(rng: random.Random, regions: list[str], per_region: int) -> list[str]:
    sample: list[str] = []
    for region in regions:
        code = str(phonenumbers.country_code_for_region(region))
        examples = [phonenumbers.example_number_for_type(region, kind) for kind in KINDS]
        seeds = [_e164(example) for example in examples if example is not None]
        for _ in range(per_region):
            # Mobiles half of the time, so that True answers are common too.
            seed = (
                seeds[0] if seeds and rng.random() < 0.5 else rng.choice(seeds) if seeds else code
            )
            sample.append(_near(rng, seed, code))
    return sample


@pytest.mark.parametrize(
    "raw",
    [
        "0831234567",
        "+27 83 123 4567",
        "0027831234567",
        "27831234567",
        "083-123-4567",
        "(083) 123 4567",
        "083.123.4567",
        "+27 (0)83 123 4567",
    ],
)
def test_za_spellings_normalise_to_e164_digits(raw: str) -> None:
    assert normalise_msisdn(raw, "ZA") == "27831234567"


def test_za_national_mobile_is_a_valid_mtn_mobile() -> None:
    e164 = normalise_msisdn("0831234567", "ZA")
    assert e164 == "27831234567"
    assert NetworkDirectory().has_network(e164)
    number = phonenumbers.parse("+" + e164)
    assert phonenumbers.number_type(number) == PhoneNumberType.MOBILE


@pytest.mark.parametrize(
    "raw", ["", "abc", "083abc4567", "12", "+27abc", "0083", "+2783123456789012", "٠٨٣١٢٣٤٥٦٧"]
)
def test_non_numbers_normalise_to_none(raw: str) -> None:
    assert normalise_msisdn(raw, "ZA") is None


@pytest.mark.parametrize(
    "raw, region, e164",
    [
        ("07400123456", "GB", "447400123456"),
        ("4792726793", "US", "14792726793"),
        ("3123456789", "IT", "393123456789"),
        ("0612345678", "IT", "390612345678"),
        ("08031234567", "NG", "2348031234567"),
        ("0412345678", "AU", "61412345678"),
    ],
)
def test_national_numbers_use_the_account_country(raw: str, region: str, e164: str) -> None:
    assert normalise_msisdn(raw, region) == e164


def test_international_digits_without_plus_are_kept_for_another_country() -> None:
    assert normalise_msisdn("447400123456", "ZA") == "447400123456"


def test_a_us_number_that_is_also_valid_abroad_stays_in_the_account_country() -> None:
    # +47 92726793 is a valid Norwegian mobile, but a US account writing 4792726793 means Arkansas.
    assert _plain("4792726793")
    assert normalise_msisdn("4792726793", "US") == "14792726793"


def test_placeholder_number_is_a_number_without_a_network() -> None:
    assert normalise_msisdn("1111111111", "ZA") == "1111111111"
    assert not NetworkDirectory().has_network("1111111111")


def test_invalid_national_number_keeps_the_account_country_code() -> None:
    assert normalise_msisdn("0111111111", "ZA") == "27111111111"


def test_route_prefix_makes_an_otherwise_invalid_number_routable() -> None:
    assert not NetworkDirectory().has_network("9995550001")
    assert NetworkDirectory(["9995"]).has_network("9995550001")
    assert not NetworkDirectory(["9996"]).has_network("9995550001")


def test_route_for_names_the_longest_matching_prefix() -> None:
    directory = NetworkDirectory(["99", "9995", "999"])
    assert directory.route_for("9995550001") == "9995"
    assert directory.route_for("27831234567") is None


def test_valid_mobiles_have_a_network() -> None:
    for region in REGIONS:
        example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
        assert NetworkDirectory().has_network(_e164(example)), region


def test_fixed_line_has_no_network() -> None:
    assert not NetworkDirectory().has_network("27211234567")  # Cape Town landline


def test_fixed_line_or_mobile_has_a_network() -> None:
    # NANP numbers cannot be told apart: libphonenumber calls them FIXED_LINE_OR_MOBILE.
    assert (
        phonenumbers.number_type(phonenumbers.parse("+12015550123"))
        == PhoneNumberType.FIXED_LINE_OR_MOBILE
    )
    assert NetworkDirectory().has_network("12015550123")


def test_has_network_agrees_with_plain_phonenumbers_across_countries() -> None:
    rng = random.Random(20261125)
    sample = _sample(rng, REGIONS, 300)
    sample += [str(rng.randrange(10 ** rng.randint(3, 15))) for _ in range(1000)]  # noise
    directory = NetworkDirectory()
    answers = [directory.has_network(e164) for e164 in sample]
    assert answers == [_plain(e164) for e164 in sample]
    # Both answers are well represented, and the fast path (not parse) decided nearly all.
    assert 0.2 < sum(answers) / len(answers) < 0.8
    assert sum(numbers._classify(e164) is not None for e164 in sample) > 0.9 * len(sample)


def test_has_network_agrees_with_plain_phonenumbers_for_every_region() -> None:
    rng = random.Random(7)
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    sample = _sample(rng, regions, 12)
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        sample += [str(code) + str(rng.randrange(10 ** rng.randint(6, 12))) for _ in range(12)]
    directory = NetworkDirectory()
    mismatches = [e164 for e164 in sample if directory.has_network(e164) != _plain(e164)]
    assert mismatches == []


def test_a_regions_one_match_mobile_check_agrees_with_its_type_table() -> None:
    rng = random.Random(11)
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
        checker = numbers._TypeChecker(metadata)
        examples = [
            str(getattr(metadata, name).example_number)
            for name in ("mobile", "fixed_line", "toll_free", "premium_rate", "voip")
            if getattr(metadata, name) is not None and getattr(metadata, name).example_number
        ]
        for national in examples + [str(rng.randrange(10 ** rng.randint(5, 12))) for _ in range(20)]:
            assert checker.is_mobile(national) == (checker.classify(national) == numbers._MOBILE), (region, national)
            checked += checker.is_mobile(national)
    assert checked > 200  # mobiles were among them, not only refusals


def test_an_own_country_mobile_is_its_own_normal_form_and_has_a_network_in_every_region() -> None:
    rng = random.Random(13)
    directory = NetworkDirectory()
    answers = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        is_own_mobile = own_mobile_test(region)
        for raw in _sample(rng, [region], 12):
            if is_own_mobile(raw):
                assert normalise_msisdn(raw, region) == raw, (region, raw)
                assert directory.has_network(raw) and _plain(raw), (region, raw)
            else:  # the long way must not find one the quick test missed, where that test applies
                answers.append(normalise_msisdn(raw, region) == raw and is_valid_mobile(raw))
            answers.append(is_own_mobile(raw))
    assert sum(answers) > 0.2 * len(answers)


@pytest.mark.parametrize(
    "raw",
    [
        "27831234567",  # the usual one: True
        "27 83 123 4567",  # separators: the long way
        "+27831234567",
        "0831234567",
        "２７８３１２３４５６７",  # fullwidth digits are no E.164 digits
        "27111234567",  # a Johannesburg fixed line
        "27831234567890",  # too long for a mobile
        "4479123456789",  # another country's mobile
    ],
)
def test_own_mobile_test_takes_only_plain_digit_mobiles_of_the_own_country(raw: str) -> None:
    assert own_mobile_test("ZA")(raw) == (raw == "27831234567")


def test_own_mobile_test_is_false_for_a_region_without_metadata() -> None:
    assert own_mobile_test("XX")("27831234567") is False


def test_is_valid_mobile_is_false_where_phonenumbers_cannot_parse() -> None:
    for e164 in ["", "1", "12", "0831234567", "999", "27" + "1" * 20]:
        assert not is_valid_mobile(e164) and not _plain(e164)


def test_national_mobiles_normalise_as_phonenumbers_parses_them() -> None:
    rng = random.Random(11)
    checked = 0
    for region in ["ZA", "GB", "DE", "NG", "KE", "IN", "FR", "AU", "RU", "IT", "US", "BR"]:
        code = str(phonenumbers.country_code_for_region(region))
        seed = _e164(phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE))
        for _ in range(150):
            e164 = _near(rng, seed, code)
            national = phonenumbers.format_number(
                phonenumbers.parse("+" + e164), phonenumbers.PhoneNumberFormat.NATIONAL
            )
            text = "".join(char for char in national if char.isdigit())
            try:
                parsed = phonenumbers.parse(text, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(parsed):
                assert normalise_msisdn(text, region) == _e164(parsed), (region, text)
                checked += 1
    assert checked > 300


def _reference_national(text: str, region: str) -> str | None:
    """normalise_msisdn's rule for a '0...' string, spelt out with phonenumbers.parse only."""
    for candidate, parse_region in ((text, region), ("+" + text, None)):
        try:
            parsed = phonenumbers.parse(candidate, parse_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return _e164(parsed)
    return f"{phonenumbers.country_code_for_region(region)}{text[1:]}"


def test_any_national_string_normalises_as_parsing_it_would() -> None:
    # Valid or not: the fast national path must give what the parse-based rule gives.
    rng = random.Random(12)
    for region in ["ZA", "GB", "DE", "NG", "KE", "IN", "FR", "AU", "RU", "IT", "BR", "JP"]:
        for _ in range(300):
            # "00..." is international, a case of its own; "0" then a digit is national.
            text = "0" + "".join(
                rng.choice("0123456789"[t == 0 :]) for t in range(rng.randint(6, 14))
            )
            assert normalise_msisdn(text, region) == _reference_national(text, region), (
                region,
                text,
            )


# --- The fast paths against phonenumbers itself, for numbers of every region ---------------------

ALL_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
_SEPARATOR = re.compile(r"[\s\-.()/]")


def _reference_normalise(raw: str, region: str) -> str | None:
    """normalise_msisdn's rule (see its docstring) with phonenumbers.parse for every step."""
    text = _SEPARATOR.sub("", raw)
    code = phonenumbers.country_code_for_region(region)  # 0 for no region
    if text.startswith("+") or text.startswith("00"):
        digits = text[1:] if text.startswith("+") else text[2:]
        if not (digits.isascii() and digits.isdigit()) or not 7 <= len(digits) <= 16:
            return None
        if _plain(digits):
            return _e164(phonenumbers.parse("+" + digits))
        return digits if len(digits) <= 15 else None
    if not (text.isascii() and text.isdigit()) or not 7 <= len(text) <= 16:
        return None
    if code and text.startswith(str(code)) and _plain(text):
        return _e164(phonenumbers.parse("+" + text))
    for candidate, parse_region in ((text, region), ("+" + text, None)):
        try:
            parsed = phonenumbers.parse(candidate, parse_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return _e164(parsed)
    if text.startswith("0") and code:
        return f"{code}{text[1:]}"
    return text if len(text) <= 15 else None


@functools.cache
def _seeds(region: str) -> tuple[str, ...]:
    """The national significant numbers of the region's example numbers, mobile first."""
    examples = [phonenumbers.example_number_for_type(region, kind) for kind in KINDS]
    return tuple(phonenumbers.national_significant_number(e) for e in examples if e is not None)


@st.composite
def written_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(what a user writes, the account's region): a number of the account's region or another
    one, near one of its example numbers or any digits, in one of the spellings users use."""
    region = draw(st.sampled_from(ALL_REGIONS))
    owner = draw(st.sampled_from([region, draw(st.sampled_from(ALL_REGIONS))]))
    code = str(phonenumbers.country_code_for_region(owner))
    seeds = _seeds(owner)
    seed = draw(st.sampled_from(seeds)) if seeds and draw(st.booleans()) else ""
    kept = seed[: draw(st.integers(0, len(seed)))]
    tail = draw(st.text("0123456789", max_size=max(0, len(seed) - len(kept) + 1) if seed else 14))
    nsn = kept + tail
    spelling = draw(st.sampled_from(["cc", "national", "plus", "spaced", "idd", "bare", "trunk"]))
    return {
        "cc": code + nsn,
        "national": "0" + nsn,
        "plus": "+" + code + nsn,
        "spaced": f"+{code} {nsn[:3]} {nsn[3:]}",
        "idd": "00" + code + nsn,
        "bare": nsn,
        "trunk": code + "0" + nsn,
    }[spelling], region


@settings(max_examples=2000, deadline=None)
@given(written_numbers())
def test_normalise_msisdn_agrees_with_phonenumbers_for_numbers_of_every_region(
    case: tuple[str, str],
) -> None:
    raw, region = case
    normal = normalise_msisdn(raw, region)
    assert normal == _reference_normalise(raw, region)
    if normal is not None:
        assert NetworkDirectory().has_network(normal) == _plain(normal)


@settings(max_examples=800, deadline=None)
@given(
    st.sampled_from(ALL_REGIONS),
    st.sampled_from(["1", "7", "44", "27", "9995", "2783", "999", "8", "0"]),
    st.text("0123456789", min_size=3, max_size=13),
)
def test_route_prefix_numbers_normalise_as_phonenumbers_parses_them(
    region: str, prefix: str, rest: str
) -> None:
    raw = prefix + rest
    assert normalise_msisdn(raw, region) == _reference_normalise(raw, region)


def _linear_route_for(prefixes: list[str], e164: str) -> str | None:
    for prefix in sorted(set(prefixes), key=len, reverse=True):
        if e164.startswith(prefix):
            return prefix
    return None


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.text("0123456789", min_size=1, max_size=6), max_size=40),
    st.text("0123456789", min_size=0, max_size=15),
)
def test_route_lookup_is_the_longest_prefix_that_matches(prefixes: list[str], e164: str) -> None:
    directory = NetworkDirectory(prefixes)
    route = directory.route_for(e164)
    linear = _linear_route_for(prefixes, e164)
    # Equal prefixes of one length are the same string, so the longest match is unique.
    assert route == linear
    assert directory.has_network(e164) == (linear is not None or _plain(e164))


def test_route_prefix_numbers_are_decided_without_parse() -> None:
    # `1` and ten digits for a ZA account (NANP numbers written without '+', most of them not
    # valid): what --mix's route-only file holds. The fast path must take nearly all of them.
    rng = random.Random(5)
    region = numbers._region("ZA")
    assert region is not None
    sample = ["1" + "".join(rng.choice("0123456789") for _ in range(10)) for _ in range(2000)]
    decided = [region.read_unprefixed(raw) is not numbers._Undecided.PARSE for raw in sample]
    assert sum(decided) > 0.98 * len(sample)
    assert [normalise_msisdn(raw, "ZA") for raw in sample] == [
        _reference_normalise(raw, "ZA") for raw in sample
    ]


def test_a_region_code_phonenumbers_does_not_parse_takes_the_long_way() -> None:
    # parse(text, "za") raises (region codes are upper case): the fast path must not guess then.
    region = numbers._region("za")
    assert region is not None
    assert region.read_unprefixed("12015550123") is numbers._Undecided.PARSE


@settings(max_examples=2000, deadline=None)
@given(written_numbers())
def test_own_mobile_reader_promises_the_normal_form_and_a_network(case: tuple[str, str]) -> None:
    raw, region = case
    read = own_mobile_reader(region)(raw)
    if read is not None:
        assert read == normalise_msisdn(raw, region) == _reference_normalise(raw, region)
        assert _plain(read) and NetworkDirectory().has_network(read)


@pytest.mark.parametrize(
    "raw",
    ["27831234567", "0831234567", "083 123 4567", "+27 83 123 4567", "+27831234567", "0027831234567", "27 83 123 4567"],
)
def test_own_mobile_reader_reads_every_usual_spelling_of_an_own_country_mobile(raw: str) -> None:
    assert own_mobile_reader("ZA")(raw) == "27831234567"


@pytest.mark.parametrize(
    "raw",
    ["27211234567", "0211234567", "+44 7400 123456", "12015550123", "+27 83 12", "083-ABC-4567", "", "+2783123456789"],
)
def test_own_mobile_reader_leaves_everything_else_to_normalise_msisdn(raw: str) -> None:
    assert own_mobile_reader("ZA")(raw) is None
