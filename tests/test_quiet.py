"""The quiet-hours rule (sftpsms/quiet.py): windows of local time, weekdays, daylight-saving
edges, numbers with several zones, and the zones of a number from libphonenumber's metadata."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers.timezone import time_zones_for_number

from sftpsms.quiet import (
    QuietHours,
    QuietHoursError,
    may_send,
    next_change_in_zone,
    quiet_in_zone,
    quiet_state,
    zone_infos,
    zones_for_number,
)

MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
NIGHT = QuietHours.parse("21:00-08:00")
NEW_YORK, LOS_ANGELES = ZoneInfo("America/New_York"), ZoneInfo("America/Los_Angeles")
# Zones with daylight saving (north and south), half-hour and 45-minute offsets, a 30-minute DST.
ZONES = [
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Anchorage",
    "America/Adak", "Pacific/Honolulu", "Europe/London", "Australia/Sydney", "Australia/Lord_Howe",
    "America/St_Johns", "Pacific/Chatham", "Asia/Kolkata", "Africa/Johannesburg",
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type,misc]


def test_a_window_reads_as_hours_and_days() -> None:
    hours = QuietHours.parse("21:00-08:00", "fri,Sat")
    assert (hours.start, hours.end, hours.days, hours.duration) == (21 * 60, 8 * 60, frozenset({4, 5}), 11 * 60)
    assert hours.describe() == {"window": "21:00-08:00", "days": ["fri", "sat"]}
    assert QuietHours.parse("00:00-24:00", "sun").duration == 24 * 60


@pytest.mark.parametrize(
    ("window", "days"),
    [("21:00", None), ("25:00-08:00", None), ("21:00-21:00", None), ("9-8", None), ("21:00-08:60", None),
     ("00:00-24:00", None), ("21:00-08:00", "mon,funday"), ("21:00-08:00", ""), ("24:00-08:00", None)],
)
def test_a_bad_window_or_day_is_refused(window: str, days: str | None) -> None:
    with pytest.raises(QuietHoursError):
        QuietHours.parse(window, days)


def test_it_is_quiet_between_the_window_times_in_the_recipients_zone() -> None:
    # 2026-12-07 is a Monday; New York is UTC-5 then.
    assert not quiet_in_zone(NIGHT, NEW_YORK, utc(2026, 12, 7, 13, 0))  # 08:00: open
    assert quiet_in_zone(NIGHT, NEW_YORK, utc(2026, 12, 7, 12, 59))  # 07:59
    assert quiet_in_zone(NIGHT, NEW_YORK, utc(2026, 12, 8, 2, 0))  # 21:00
    assert not quiet_in_zone(NIGHT, NEW_YORK, utc(2026, 12, 8, 1, 59))  # 20:59
    assert quiet_in_zone(NIGHT, LOS_ANGELES, utc(2026, 12, 7, 13, 0))  # 05:00 in LA


def test_a_window_applies_on_the_day_it_starts() -> None:
    friday_nights = QuietHours.parse("21:00-08:00", "fri")
    assert quiet_in_zone(friday_nights, NEW_YORK, utc(2026, 12, 12, 2, 30))  # Fri 21:30
    assert quiet_in_zone(friday_nights, NEW_YORK, utc(2026, 12, 12, 12, 30))  # Sat 07:30
    assert not quiet_in_zone(friday_nights, NEW_YORK, utc(2026, 12, 13, 2, 30))  # Sat 21:30
    assert not quiet_in_zone(friday_nights, NEW_YORK, utc(2026, 12, 11, 12, 30))  # Fri 07:30 (Thu's)


def test_the_window_opens_at_local_eight() -> None:
    assert may_send(NIGHT, "12125551234", utc(2026, 12, 7, 12, 0), "ZA") == (False, utc(2026, 12, 7, 13, 0))
    assert may_send(NIGHT, "12135551234", utc(2026, 12, 7, 12, 0), "ZA") == (False, utc(2026, 12, 7, 16, 0))
    assert may_send(NIGHT, "12125551234", utc(2026, 12, 7, 14, 0), "ZA") == (True, None)


def test_spring_forward_a_window_ending_in_the_gap_ends_at_the_jump() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC). A window ending at 02:30 ends at the jump:
    # the clock then reads 03:00, past 02:30.
    hours = QuietHours.parse("22:00-02:30")
    assert next_change_in_zone(hours, NEW_YORK, utc(2026, 3, 8, 6, 0)) == utc(2026, 3, 8, 7, 0)
    # and one starting at 02:30 starts at the jump
    late = QuietHours.parse("02:30-05:00")
    assert next_change_in_zone(late, NEW_YORK, utc(2026, 3, 8, 6, 0)) == utc(2026, 3, 8, 7, 0)


def test_fall_back_the_repeated_hour_is_quiet_again() -> None:
    # 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC): 01:00-02:00 comes twice.
    hours = QuietHours.parse("22:00-01:30")
    first_end = utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    assert next_change_in_zone(hours, NEW_YORK, utc(2026, 11, 1, 5, 0)) == first_end
    assert next_change_in_zone(hours, NEW_YORK, first_end) == utc(2026, 11, 1, 6, 0)  # back to 01:00 EST
    assert quiet_in_zone(hours, NEW_YORK, utc(2026, 11, 1, 6, 15))
    assert not quiet_in_zone(hours, NEW_YORK, utc(2026, 11, 1, 6, 30))  # 01:30 EST


def test_a_number_of_several_zones_waits_for_the_last_of_them() -> None:
    # Alaska's 907 is America/Anchorage and America/Adak (an hour behind).
    assert set(zones_for_number("19075551234", "ZA")) == {"America/Anchorage", "America/Adak"}
    allowed, opens = may_send(NIGHT, "19075551234", utc(2026, 12, 7, 17, 30), "ZA")  # 08:30 AKST, 07:30 HST-Adak
    assert (allowed, opens) == (False, utc(2026, 12, 7, 18, 0))
    # open in both, it closes as soon as the first one closes
    state = quiet_state(NIGHT, zone_infos(zones_for_number("19075551234", "ZA")), utc(2026, 12, 7, 20, 0))
    assert state == quiet_state(NIGHT, zone_infos(("America/Anchorage",)), utc(2026, 12, 7, 20, 0))


def test_zones_that_are_never_all_open_at_once_never_open() -> None:
    # 21:00-08:00 in Pacific/Kiritimati (UTC+14) and Pacific/Pago_Pago (UTC-11): 13 hours open
    # each, and only 1 hour apart the other way round; never open together for a 17-hour window.
    hours = QuietHours.parse("19:00-09:00")
    state = quiet_state(hours, zone_infos(("Pacific/Kiritimati", "Asia/Kolkata", "America/New_York")), utc(2026, 12, 7))
    assert state.quiet and state.until is None


def test_a_number_the_metadata_cannot_place_takes_the_accounts_country() -> None:
    assert zones_for_number("27831234567", "US") == ("Africa/Johannesburg",)
    assert zones_for_number("99912345", "ZA") == ("Africa/Johannesburg",)  # no such country code
    assert "America/New_York" in zones_for_number("99912345", "US")


@pytest.mark.parametrize("region", ["US", "CA", "ZA", "GB", "AU", "RU", "MX", "BR", "ID", "DE", "IN", "NZ", "FR"])
def test_zones_are_those_of_libphonenumber_for_mobile_numbers(region: str) -> None:
    for kind in MOBILE_TYPES:
        example = phonenumbers.example_number_for_type(region, kind)
        if example is None:
            continue
        # neighbours of the example share its prefix and type
        for last in range(10):
            number = phonenumbers.parse(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[:-1] + str(last))
            if phonenumbers.number_type(number) not in MOBILE_TYPES:
                continue  # only valid mobiles have a network (sftpsms/numbers.py)
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
            assert zones_for_number(e164, "ZA") == time_zones_for_number(number), e164


instants = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2032, 12, 31)).map(
    lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC)
)
windows = st.builds(
    lambda start, length, days: QuietHours(start * 15, (start * 15 + length * 15 - 1) % 1440 + 1, frozenset(days)),
    st.integers(0, 95),
    st.integers(1, 95),
    st.sets(st.integers(0, 6), min_size=1),
)


def _brute_next_change(hours: QuietHours, zone: ZoneInfo, at: datetime, minutes: int) -> datetime | None:
    state = quiet_in_zone(hours, zone, at)
    for step in range(1, minutes):
        moment = at + timedelta(minutes=step)
        if quiet_in_zone(hours, zone, moment) != state:
            return moment
    return None


@settings(max_examples=150, deadline=None)
@given(hours=windows, zone=st.sampled_from(ZONES), at=instants)
def test_the_next_change_is_the_first_minute_the_clock_says_otherwise(hours: QuietHours, zone: str, at: datetime) -> None:
    tz = ZoneInfo(zone)
    brute = _brute_next_change(hours, tz, at, 3 * 24 * 60)
    found = next_change_in_zone(hours, tz, at)
    if brute is not None:
        assert found == brute
    else:
        assert found is None or found > at + timedelta(days=3) - timedelta(minutes=1)


@settings(max_examples=60, deadline=None)
@given(hours=windows, zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True), at=instants)
def test_several_zones_are_open_only_when_all_are(hours: QuietHours, zones: list[str], at: datetime) -> None:
    infos = zone_infos(tuple(zones))
    state = quiet_state(hours, infos, at)
    assert state.quiet == any(quiet_in_zone(hours, z, at) for z in infos)
    if state.until is None:
        return
    assert state.until > at
    # Nothing changes before `until` (checked every 15 minutes and just before it) ...
    probe = at
    while probe < state.until:
        assert any(quiet_in_zone(hours, z, probe) for z in infos) == state.quiet
        probe = min(probe + timedelta(minutes=15), state.until - timedelta(seconds=1)) if probe < state.until - timedelta(seconds=1) else state.until
    # ... and a quiet state opens at `until`: every zone open then (never early anywhere)
    if state.quiet:
        assert not any(quiet_in_zone(hours, z, state.until) for z in infos)


def _transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """The zone's UTC-offset changes in a year (found as the dispatcher's rule finds them)."""
    from sftpsms.quiet import _next_transition, _offset

    found, moment, end = [], datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    while True:
        moment = _next_transition(zone, moment, _offset(zone, moment), end)
        if moment >= end:
            return found
        found.append(moment)


@settings(max_examples=200, deadline=None)
@given(
    hours=windows,
    zone=st.sampled_from([z for z in ZONES if z not in ("Asia/Kolkata", "Africa/Johannesburg", "Pacific/Honolulu")]),
    year=st.integers(2024, 2032),
    which=st.integers(0, 1),
    minutes=st.integers(-36 * 60, 36 * 60),
)
def test_around_daylight_saving_changes_the_next_change_is_the_clocks(
    hours: QuietHours, zone: str, year: int, which: int, minutes: int
) -> None:
    tz = ZoneInfo(zone)
    transitions = _transitions(tz, year)
    assert len(transitions) == 2
    at = transitions[which].replace(second=0) + timedelta(minutes=minutes)
    brute = _brute_next_change(hours, tz, at, 3 * 24 * 60)
    found = next_change_in_zone(hours, tz, at)
    if brute is not None:
        assert found == brute
    else:
        assert found is None or found > at + timedelta(days=3) - timedelta(minutes=1)
