"""MSISDNs: normalising what users write to E.164 digits, and deciding whether a number has a
network (a valid mobile number by libphonenumber's metadata, or a configured route prefix)."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from functools import cache, lru_cache
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber, PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, NumberParseException

_SEPARATORS = re.compile(r"[\s\-.()/]")
MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
# E.164 allows 15 digits; one more is let in when a trunk 0 written after the country code
# (`+27 083...`) will be dropped by canonicalisation.
MIN_DIGITS, MAX_DIGITS = 7, 15

# Bounds inside which the fast path mirrors phonenumbers.parse("+" + digits) step by step; outside
# them parse raises or takes branches (too short after the "+", too long a national number) that
# we leave to phonenumbers itself.
_FAST_MIN_DIGITS, _FAST_MAX_NSN = 4, 17
_MIN_NSN = 2  # parse raises for a shorter national number


def normalise_msisdn(raw: str, default_region: str) -> str | None:
    """E.164 digits without '+', or None when `raw` is not a phone number at all.

    `+CC...` and `00CC...` are international. Other digits are read as a valid mobile in the
    account's own country code if they are one, then in national format for `default_region`,
    then as international digits without '+'. National format comes before foreign international
    digits because ~5% of valid US numbers are also valid abroad (a US account's `4792726793` is
    Arkansas, not the Norwegian mobile +47 92726793); in regions with a '0' trunk prefix (ZA, GB,
    ...) national numbers start with 0 and no country code does, so the readings cannot collide.
    A number that is not valid anywhere is still returned (the network check reports it) unless
    it is too short or too long to be an MSISDN.
    """
    text = raw if type(raw) is str and _is_digits(raw) else _SEPARATORS.sub("", str(raw))  # most: plain digits
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("00"):
        digits = text[2:]
    else:
        return _normalise_unprefixed(text, default_region)
    if not _is_digits(digits) or not MIN_DIGITS <= len(digits) <= MAX_DIGITS + 1:
        return None
    if is_valid_mobile(digits):
        return _canonical(digits)
    return digits if len(digits) <= MAX_DIGITS else None


def _normalise_unprefixed(text: str, default_region: str) -> str | None:
    if not _is_digits(text) or not MIN_DIGITS <= len(text) <= MAX_DIGITS + 1:
        return None
    region = _region(default_region)
    if region is not None:
        # The common cases, without phonenumbers.parse: the account's own country code in front
        # of a valid mobile, or a national '0' number (see as_international).
        if text.startswith(region.country) and is_valid_mobile(text):
            return _canonical(text)
        national = region.as_international(text)
        if national is not None:
            return national
        read = region.read_unprefixed(text)
        if read is not _Undecided.PARSE:
            return read
    for candidate, parse_region in ((text, default_region), ("+" + text, None)):
        try:
            normalised = _valid(phonenumbers.parse(candidate, parse_region))
        except NumberParseException:
            continue
        if normalised is not None:
            return normalised
    if text.startswith("0") and region is not None:
        # National form of a number that is not valid: keep it routable by prefix, no network.
        return f"{region.country}{text[1:]}"
    return text if len(text) <= MAX_DIGITS else None


def _is_digits(text: str) -> bool:
    # str.isdigit() also accepts '²' and Arabic-Indic digits, which are no E.164 digits.
    return text.isascii() and text.isdigit()


def _valid(number: PhoneNumber) -> str | None:
    if phonenumbers.is_valid_number(number):
        return f"{number.country_code}{phonenumbers.national_significant_number(number)}"
    return None


def _canonical(digits: str) -> str:
    """The E.164 form of international digits that are a valid number (trunk prefixes dropped)."""
    read = _read_international(digits)
    if read is not None and read[0]:
        return read[1]
    return _valid(phonenumbers.parse("+" + digits, None)) or digits


class _Undecided(enum.Enum):
    """The fast path cannot promise what phonenumbers.parse would give: ask it."""

    PARSE = "parse"


class _Region:
    """What the fast paths for an account's default region need to know, compiled once."""

    def __init__(self, region_code: str, metadata: Any) -> None:
        self.country = str(metadata.country_code)
        idd = metadata.international_prefix
        self.idd = re.compile(idd) if idd else None
        # Only a plain '0' trunk prefix is stripped here; '(?:0|90)(...)?' and friends (BR, AR,
        # JP) carry carrier codes or rewrite rules, and go through phonenumbers.parse.
        self.zero_trunk = metadata.national_prefix_for_parsing == "0" and not (
            metadata.national_prefix_transform_rule
        )
        # parse() strips the 0 only when the rest fits the region's general description: its
        # pattern, for each length it allows (see as_international).
        self.general = metadata.general_desc
        self.national_rest: dict[int, _Fullmatch] = {}
        if self.general is not None and self.general.possible_length:
            for length in range(1, MAX_DIGITS + 1):
                pattern = _pattern_for_length(self.general, length)
                if pattern is not None:
                    self.national_rest[length] = _compiled(pattern).fullmatch
        self.national_prefix = _NationalPrefix(metadata)
        general = self.general.national_number_pattern if self.general is not None else None
        self.general_match = _compiled(general).fullmatch if general else None
        lengths = tuple(self.general.possible_length) if self.general is not None else ()
        self.longest = max(lengths) if lengths else None
        self.local_only = frozenset(self.general.possible_length_local_only or ())
        # parse(text, region) takes only an exact region code of phonenumbers (lowercase: it
        # raises), and reads a country code it finds at the start with the main region's metadata.
        self.parses = region_code in phonenumbers.SUPPORTED_REGIONS
        main = COUNTRY_CODE_TO_REGION_CODE.get(int(metadata.country_code), ("",))[0]
        self.is_main = main == region_code
        self.country_code = _country_code(self.country)

    def as_international(self, text: str) -> str | None:
        """`0831234567` -> `27831234567`, or None when we are not sure parse() agrees.

        With no international dialling prefix in front and a rest that fits the region's general
        description (pattern and length), parse(text, region) strips the trunk 0 and keeps the
        rest. So the slow path below would return exactly this: valid, it is the canonical form;
        not valid, "+0..." cannot parse and the fallback is this same country code + rest."""
        if not self.zero_trunk or not text.startswith("0"):
            return None
        if self.idd is not None and self.idd.match(text):
            return None
        fits = self.national_rest.get(len(text) - 1)
        if fits is None or not fits(text[1:]):
            return None
        return self.country + text[1:]

    def read_unprefixed(self, text: str) -> str | None | _Undecided:
        """What _normalise_unprefixed's two parse() readings and its fallback give for digits
        that as_international and the own-mobile test left (a route-prefix number, another
        country's number without its '+', an own-country landline, a national number of a
        region with another trunk prefix), or PARSE when unsure.

        `text` is 7..16 ASCII digits. The steps are parse(text, region)'s:
          - an international dialling prefix in front (`00`, `011`) is read as one: PARSE;
          - the region's own country code in front is dropped when the number with it does not
            fit the general pattern and the rest does, or the number with it is too long;
          - a national prefix is cut off as _NationalPrefix says (a rewrite: PARSE);
          - valid (the region lookup and type tables of _CountryCode): country code + number.
        Not valid: a '0...' number cannot be read with '+' and gets the fallback (country code
        + the rest); other digits are read as parse("+" + text) would (_international_as_written)."""
        if not self.parses or self.country_code is None or self.general_match is None:
            return _Undecided.PARSE
        if self.idd is not None and self.idd.match(text):
            return _Undecided.PARSE
        national = text
        if text.startswith(self.country):
            rest = self.national_prefix.national_after(text[len(self.country) :], length_rule=False)
            if rest is None:
                return _Undecided.PARSE
            too_long = (
                self.longest is not None
                and len(text) > self.longest
                and len(text) not in self.local_only
            )
            if too_long or (self.general_match(text) is None and self.general_match(rest) is not None):
                if not self.is_main or len(rest) < _MIN_NSN:
                    return _Undecided.PARSE
                national = rest
        after = self.national_prefix.national_after(national)
        if after is None:
            return _Undecided.PARSE
        if self.country_code.classify(after) != _INVALID:
            return self.country + after
        if text.startswith("0"):
            return self.country + text[1:]  # "+0..." cannot parse; normalise_msisdn's fallback
        return _international_as_written(text)


def _international_as_written(text: str) -> str | None | _Undecided:
    """normalise_msisdn's answer for unprefixed digits that are no valid national number: what
    parse("+" + text) makes of them, or the fallback (the digits, up to 15 of them)."""
    fallback = text if len(text) <= MAX_DIGITS else None
    if not _has_country_code(text[:3]):
        return fallback  # parse raises: no country calling code
    split = _split_country(text[:3])
    if split is None:
        return _Undecided.PARSE  # assigned but without metadata
    length, country = split
    national = country.national_prefix.national_after(text[length:])
    if national is None:
        return _Undecided.PARSE
    if fallback is not None and len(national) == len(text) - length:
        return text  # valid, parse's E.164 form is these digits; invalid, they are the fallback
    if country.classify(national) != _INVALID:
        return text[:length] + national  # parse's E.164 form: valid, with no trunk prefix
    return fallback


@cache
def _region(region_code: str) -> _Region | None:
    metadata = PhoneMetadata.metadata_for_region(region_code.upper(), None)
    return None if metadata is None else _Region(region_code, metadata)


# --- The network check -------------------------------------------------------------------------
#
# The definition is phonenumbers' own: `n = parse("+" + e164)`, then `is_valid_number(n) and
# number_type(n) in MOBILE_TYPES`. number_type() returns a mobile type only for a number valid in
# its region (it runs the same region lookup and _number_type_helper as is_valid_number), so one
# classification decides both. Most of the ~40 µs per number is parse() and the per-call pattern
# lookups; below, the same steps run over patterns compiled once per country code:
#
#   parse:               country code = the shortest of the first 1..3 digits that is assigned;
#                        the national prefix of the code's main region is stripped when it
#                        matches (we defer those numbers to parse itself); a leading zero stays.
#   region lookup:       one region -> it; several -> the first whose leading_digits match, or,
#                        without leading_digits, whose type is not UNKNOWN.
#   _number_type_helper: general_desc, then premium rate ... voicemail, then fixed line / mobile,
#                        each desc a possible-length check and then a full match of its pattern.
#
# test_numbers.py compares the two on thousands of numbers across many countries.


# What _number_type_helper's answer means for the network check.
_INVALID, _OTHER, _MOBILE = 0, 1, 2  # UNKNOWN; any other type; MOBILE or FIXED_LINE_OR_MOBILE

_Fullmatch = Callable[[str], "re.Match[str] | None"]
_OTHER_DESCS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _pattern_for_length(desc: Any, length: int) -> str | None:
    """libphonenumber's _is_number_matching_desc, for numbers of one length: the pattern to match
    in full (its `pattern.match(n) and fullmatch(pattern, n)` is just a fullmatch), or None when
    nothing of that length can match (no desc, an empty pattern, or a length it does not allow)."""
    pattern = getattr(desc, "national_number_pattern", None) if desc is not None else None
    if not pattern:
        return None
    if desc.possible_length and length not in desc.possible_length:
        return None
    return str(pattern)


class _TypeChecker:
    """libphonenumber's _number_type_helper for one region, as one table row per number length."""

    def __init__(self, metadata: Any) -> None:
        self.same = bool(metadata.same_mobile_and_fixed_line_pattern)
        self.rows: dict[
            int, tuple[_Fullmatch, _Fullmatch | None, _Fullmatch | None, _Fullmatch | None]
        ] = {}
        # classify(n) == _MOBILE in one fullmatch per length (see is_mobile).
        self.mobile_rows: dict[int, _Fullmatch] = {}
        for length in range(2, _FAST_MAX_NSN + 1):
            general = _pattern_for_length(metadata.general_desc, length)
            if general is None:
                continue  # every number of this length is UNKNOWN
            # Premium rate, toll free, ... voicemail all mean "valid, not mobile" here, so one
            # alternation stands for the eight checks (a fullmatch of (?:a)|(?:b) is a or b).
            others = [_pattern_for_length(getattr(metadata, name), length) for name in _OTHER_DESCS]
            other = "|".join(f"(?:{pattern})" for pattern in others if pattern is not None)
            fixed = _pattern_for_length(metadata.fixed_line, length)
            mobile = _pattern_for_length(metadata.mobile, length)
            self.rows[length] = (
                _compiled(general).fullmatch,
                _compiled(other).fullmatch if other else None,
                _compiled(fixed).fullmatch if fixed else None,
                _compiled(mobile).fullmatch if mobile else None,
            )
            # classify() says _MOBILE exactly when the general pattern matches, no other type's
            # does, and the mobile pattern matches (the fixed-line one where the region says the
            # two are the same): as lookaheads, so a number is matched once instead of up to four
            # times (a contact's number check was a third of pass 1).
            kind = fixed if self.same else mobile
            if kind is not None:
                refuse_other = f"(?!(?:{other})\\Z)" if other else ""
                self.mobile_rows[length] = _compiled(f"(?=(?:{general})\\Z){refuse_other}(?:{kind})").fullmatch

    def is_mobile(self, national: str) -> bool:
        """classify(national) == _MOBILE, in one regular-expression match."""
        match = self.mobile_rows.get(len(national))
        return match is not None and match(national) is not None

    def classify(self, national: str) -> int:
        row = self.rows.get(len(national))
        if row is None:
            return _INVALID
        general, other, fixed, mobile = row
        if general(national) is None:
            return _INVALID
        if other is not None and other(national) is not None:
            return _OTHER
        if fixed is not None and fixed(national) is not None:
            # FIXED_LINE_OR_MOBILE when the patterns are the same or the mobile one matches too.
            if self.same or (mobile is not None and mobile(national) is not None):
                return _MOBILE
            return _OTHER
        if not self.same and mobile is not None and mobile(national) is not None:
            return _MOBILE
        return _INVALID


class _CountryCode:
    """Everything about one country calling code that the fast path needs, compiled once."""

    def __init__(
        self, main: Any, regions: list[tuple[re.Pattern[str] | None, _TypeChecker]]
    ) -> None:
        self.national_prefix = _NationalPrefix(main)
        self.regions = regions
        self.single = regions[0][1] if len(regions) == 1 else None
        # region_code_for_number's walk over the regions, with each run of regions that have
        # leading digits as one alternation: its first alternative that matches is the first
        # region whose leading digits match (NANP: 24 patterns were 24 matches per number).
        # Each alternative ends in an empty group, the last one closed: lastindex names it.
        self.steps: list[tuple[re.Pattern[str] | None, dict[int, _TypeChecker]]] = []
        run: list[tuple[re.Pattern[str], _TypeChecker]] = []
        for leading_digits, checker in regions:
            if leading_digits is not None:
                run.append((leading_digits, checker))
                continue
            if run:
                self.steps.append(_alternation(run))
                run = []
            self.steps.append((None, {0: checker}))
        if run:
            self.steps.append(_alternation(run))

    def keeps_national_number(self, national: str) -> bool:
        """True when parse() certainly leaves the digits after the country code unchanged."""
        return self.national_prefix.keeps(national)

    def is_mobile(self, national: str) -> bool:
        if self.single is not None:
            return self.single.is_mobile(national)
        return self.classify(national) == _MOBILE

    def classify(self, national: str) -> int:
        """_INVALID, _OTHER or _MOBILE, as is_valid_number and number_type would say."""
        if self.single is not None:
            return self.single.classify(national)
        # region_code_for_number: the first region whose leading digits match, or (for a region
        # without leading digits) whose type is not UNKNOWN; the type is then that region's.
        for leading_digits, checkers in self.steps:
            if leading_digits is not None:
                match = leading_digits.match(national)
                if match is not None:
                    return checkers[match.lastindex or 0].classify(national)
                continue
            kind = checkers[0].classify(national)
            if kind != _INVALID:
                return kind
        return _INVALID  # no region claims it: phonenumbers calls it invalid


def _alternation(
    run: list[tuple[re.Pattern[str], _TypeChecker]],
) -> tuple[re.Pattern[str], dict[int, _TypeChecker]]:
    """One pattern for consecutive regions' leading digits, and the region of each end group."""
    alternatives, checkers, groups = [], {}, 0
    for leading_digits, checker in run:
        groups += leading_digits.groups + 1
        alternatives.append(f"(?:{leading_digits.pattern})()")
        checkers[groups] = checker
    return re.compile("|".join(alternatives)), checkers


class _NationalPrefix:
    """Whether parse() leaves a national number as it is, for one region's national prefix for
    parsing (a trunk digit, a carrier code), as _maybe_strip_national_prefix_carrier_code and the
    length check after it in parse() decide. False means it may change it: ask parse."""

    def __init__(self, metadata: Any) -> None:
        prefix = metadata.national_prefix_for_parsing
        self.pattern = re.compile(prefix) if prefix else None
        self.transform = bool(metadata.national_prefix_transform_rule)
        general = metadata.general_desc
        pattern = general.national_number_pattern if general is not None else None
        self.general = _compiled(pattern).fullmatch if pattern else None
        self.lengths = tuple(general.possible_length) if general is not None else ()
        self.local_only = tuple(general.possible_length_local_only or ()) if general is not None else ()

    def keeps(self, national: str, *, length_rule: bool = True) -> bool:
        """True when parse() certainly leaves `national` as it is."""
        return self.national_after(national, length_rule=length_rule) == national

    def national_after(self, national: str, *, length_rule: bool = True) -> str | None:
        """The national number parse() goes on with: `national` with a trunk prefix or carrier
        code cut off, or as it is; None when parse would rewrite it (or fail) instead.
        `length_rule`: parse() itself takes the stripped number only when its length is
        possible; the strip inside _maybe_extract_country_code has no such rule."""
        if self.pattern is None:
            return national
        match = self.pattern.match(national)
        if match is None:
            return national
        groups = match.groups()
        if self.transform and not (groups and groups[-1] is None):
            return None  # a rewrite (AR's mobile 9, MX's 1): ask parse
        # Without a rewrite the match is cut off. A pattern such as AR's '0?(?:...15)?' can match
        # nothing at all: the number is kept as it is.
        if match.end() == 0:
            return national
        stripped = national[match.end() :]
        if self.general is None or len(stripped) < _MIN_NSN:
            return None  # parse's viability and length tests would not hold: not ours to guess
        if self.general(national) is not None and self.general(stripped) is None:
            return national  # a number that fits as it is is not made one that does not
        if length_rule and self._length_refused(len(stripped)):
            return national
        return stripped

    def _length_refused(self, length: int) -> bool:
        """_test_number_length(stripped) in (TOO_SHORT, IS_POSSIBLE_LOCAL_ONLY, INVALID_LENGTH)."""
        lengths = self.lengths
        if not lengths:
            return False  # parse would fail on it (an index error): not ours to guess
        if length in self.local_only:
            return True
        if lengths[0] == length:
            return False
        if lengths[0] > length:
            return True
        if lengths[-1] < length:
            return False  # TOO_LONG: stripped
        return length not in lengths[1:]


@cache
def _country_code(digits: str) -> _CountryCode | None:
    """The country calling code spelt `digits`, or None when unassigned or without metadata."""
    region_codes = COUNTRY_CODE_TO_REGION_CODE.get(int(digits))
    if not region_codes:
        return None
    main = PhoneMetadata.metadata_for_region_or_calling_code(int(digits), region_codes[0])
    if main is None:
        return None
    regions: list[tuple[re.Pattern[str] | None, _TypeChecker]] = []
    if len(region_codes) == 1:
        regions.append((None, _TypeChecker(main)))
    else:
        for region_code in region_codes:
            metadata = PhoneMetadata.metadata_for_region(region_code, None)
            if metadata is None:
                continue  # libphonenumber skips regions without metadata too
            leading = metadata.leading_digits
            regions.append(
                (re.compile(leading) if leading is not None else None, _TypeChecker(metadata))
            )
    return _CountryCode(main, regions) if regions else None


@cache
def _has_country_code(first_three: str) -> bool:
    """Whether parse("+" + digits starting so) finds a country calling code (assigned, with
    metadata or not)."""
    return any(int(first_three[:length]) in COUNTRY_CODE_TO_REGION_CODE for length in (1, 2, 3))


@cache
def _split_country(first_three: str) -> tuple[int, _CountryCode] | None:
    """The country calling code a number starting with these three digits has, and its length.
    Country codes are prefix-free, so the first assigned 1..3-digit prefix is the code."""
    for length in (1, 2, 3):
        country = _country_code(first_three[:length])
        if country is not None:
            return length, country
    return None


# Each number is classified up to three times in a row (normalise_msisdn's is_valid_mobile and
# _canonical, then has_network): a small cache makes that once. is_valid_mobile has no cache of
# its own (a second lookup and insertion per new number cost more than they saved).
@lru_cache(maxsize=4096)
def _read_international(e164: str) -> tuple[bool, str] | None:
    """What parse("+" + e164) says of ASCII digits, exactly: whether they are a valid mobile
    number, and the E.164 digits of the number (a trunk prefix after the country code, as in
    `+44 07400...`, dropped); None when parse would do more (a rewrite, a carrier code that is
    not cut off, no metadata): we do not guess then."""
    if len(e164) < _FAST_MIN_DIGITS or not _is_digits(e164) or e164[0] == "0":
        return None
    split = _split_country(e164[:3])
    if split is None:
        return None
    length, country = split
    national = e164[length:]
    if not _MIN_NSN <= len(national) <= _FAST_MAX_NSN:
        return None
    after = country.national_prefix.national_after(national)
    if after is None:
        return None
    # A leading zero (Italy) is kept by parse as italian_leading_zero/number_of_leading_zeros,
    # and national_significant_number() gives back exactly these digits, so no special case.
    return country.is_mobile(after), e164 if len(after) == len(national) else e164[:length] + after


def _classify(e164: str) -> bool | None:
    """Whether ASCII digits are a valid mobile number as phonenumbers would say, or None when
    the fast path does not decide."""
    read = _read_international(e164)
    return None if read is None else read[0]


@lru_cache(maxsize=4096)  # asked up to three times in a row too, and parse() is ~40 µs
def _slow_is_valid_mobile(e164: str) -> bool:
    try:
        number = phonenumbers.parse("+" + e164, None)
    except NumberParseException:
        return False
    return phonenumbers.number_type(number) in MOBILE_TYPES


def is_valid_mobile(e164: str) -> bool:
    """Exactly `is_valid_number(n) and number_type(n) in (MOBILE, FIXED_LINE_OR_MOBILE)` for
    `n = phonenumbers.parse("+" + e164)` (False when parse raises), ~5x faster for plain digits."""
    read = _read_international(e164)
    return _slow_is_valid_mobile(e164) if read is None else read[0]


def own_mobile_test(region_code: str) -> Callable[[str], bool]:
    """A quick test for the usual MSISDN of an account in `region_code`: plain ASCII digits that
    start with the region's country code and are a valid mobile number. True promises that
    `normalise_msisdn(raw, region_code) == raw` and that every NetworkDirectory has a network for
    it (these are _classify's checks, run once with nothing cached: pass 1 met each number once and
    paid for normalise_msisdn, two cache lookups and has_network, ~2.3 µs, where this is ~0.6 µs).
    False promises nothing: take normalise_msisdn."""
    region = _region(region_code)
    split = None if region is None else _split_country((region.country + "00")[:3])
    if region is None or split is None or split[0] != len(region.country):
        return lambda _: False
    code, country = region.country, split[1]
    skip = len(code)
    shortest = max(MIN_DIGITS, _FAST_MIN_DIGITS, skip + 2)
    longest = min(MAX_DIGITS + 1, skip + _FAST_MAX_NSN)

    prefix = country.national_prefix.pattern  # no match (the usual case): parse keeps it
    keeps = country.keeps_national_number

    def is_own_mobile(raw: str) -> bool:
        if not (type(raw) is str and shortest <= len(raw) <= longest and raw.startswith(code) and raw.isascii() and raw.isdigit()):
            return False
        national = raw[skip:]
        if prefix is not None and prefix.match(national) is not None and not keeps(national):
            return False
        return country.is_mobile(national)

    return is_own_mobile


def own_mobile_reader(region_code: str) -> Callable[[str], str | None]:
    """own_mobile_test for every usual spelling of an own-country mobile: `2782...`, national
    `082...`, `+27 82 ...`, `0027...`, with separators or without. A string promises that it is
    `normalise_msisdn(raw, region_code)` and that every NetworkDirectory has a network for it
    (the checks of normalise_msisdn's branches and of _read_international, run once: a national
    or '+' number cost ~6 µs the long way, twice the usual one). None promises nothing: take
    normalise_msisdn."""
    region = _region(region_code)
    is_own_mobile = own_mobile_test(region_code)
    split = None if region is None else _split_country((region.country + "00")[:3])
    if region is None or split is None or split[0] != len(region.country):
        return lambda _: None
    code, country = region.country, split[1]

    def read_own_mobile(raw: str) -> str | None:
        if is_own_mobile(raw):
            return raw
        if type(raw) is not str:
            return None
        text = raw if _is_digits(raw) else _SEPARATORS.sub("", raw)
        if text.startswith("+"):
            digits = text[1:]
        elif text.startswith("00"):
            digits = text[2:]
        elif text.startswith("0"):
            # _normalise_unprefixed: as_international's reading, which has a network when the
            # rest is a mobile that parse("+" + code + rest) keeps as it is.
            if not (_is_digits(text) and MIN_DIGITS <= len(text) <= MAX_DIGITS + 1):
                return None
            if region.as_international(text) is None:
                return None
            rest = text[1:]
            if _MIN_NSN <= len(rest) <= _FAST_MAX_NSN and country.keeps_national_number(rest) and country.is_mobile(rest):
                return code + rest
            return None
        elif text is raw:
            return None  # plain digits that the first test refused
        else:
            digits = text
        # '+', '00' and separated plain digits: valid mobiles that are their own E.164 form.
        return digits if is_own_mobile(digits) else None

    return read_own_mobile


class NetworkDirectory:
    """Which numbers can be sent to: route prefixes first, then libphonenumber's metadata."""

    def __init__(self, route_prefixes: Iterable[str] = ()) -> None:
        # Longest first, so route_for names the most specific route.
        self.prefixes = tuple(sorted(set(route_prefixes), key=len, reverse=True))
        # One set lookup per prefix length instead of one startswith per prefix: an operator may
        # route thousands of ranges, and each contact is looked up (a prefix of length L is in
        # the set of length L only when the number's first L digits are that prefix).
        lengths = sorted({len(prefix) for prefix in self.prefixes}, reverse=True)
        self._by_length = tuple(
            (length, frozenset(prefix for prefix in self.prefixes if len(prefix) == length))
            for length in lengths
        )

    def route_for(self, e164: str) -> str | None:
        for length, prefixes in self._by_length:
            start = e164[:length]
            if start in prefixes:
                return start
        return None

    def has_network(self, e164: str) -> bool:
        return self.route_for(e164) is not None or is_valid_mobile(e164)
