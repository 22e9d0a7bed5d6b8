"""Quiet hours: the local times at a recipient's location when no message may be submitted to it.

An account may set a window of local wall-clock time (`21:00-08:00`) and the local weekdays it
applies on (the day a window *starts*: `fri` with `21:00-08:00` is Friday 21:00 to Saturday
08:00). It is quiet at an instant when the recipient's local clock reads a time inside a window.
That is the clock's reading, so across daylight-saving changes a window is what the wall clock
says: a start in the spring-forward gap begins at the jump, the repeated hour of a fall-back is
quiet twice when it is inside the window.

The recipient's location is the time zone libphonenumber's metadata gives its number
(`phonenumbers.timezone`); a number whose prefix maps to several zones (a country that spans
them, a mobile number that is not geographic) is quiet while it is quiet in ANY of them, so it
never goes early anywhere. A number the metadata cannot place takes the account's country's zones.

Pure and synchronous: every function takes the instant (`at`, aware UTC) as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, country_code_for_region
from phonenumbers.phonenumberutil import _GEO_MOBILE_COUNTRIES
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_DAY = frozenset(range(7))
MINUTES_PER_DAY = 24 * 60
# How far ahead a state change is looked for: a window applies at least once a week.
HORIZON = timedelta(days=8)
_DAY = timedelta(days=1)
_MAX_ZONE_STEPS = 64  # rounds of "wait for the zones still quiet" (several zones, see quiet_state)


class QuietHoursError(ValueError):
    """A quiet-hours window or day list that cannot be read; the message says what is expected."""


def _minutes(text: str, *, end: bool) -> int:
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2 or len(hours) > 2:
        raise QuietHoursError(f"{text!r} is not a time of day (HH:MM)")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > MINUTES_PER_DAY or (value == MINUTES_PER_DAY and not end):
        raise QuietHoursError(f"{text!r} is not a time of day (00:00 to 23:59; 24:00 as an end)")
    return value


@dataclass(frozen=True)
class QuietHours:
    """A daily window of local time, on some weekdays. `start`, `end`: minutes after local
    midnight; an end at or before the start is on the next day (`end` 1440 is midnight)."""

    start: int
    end: int
    days: frozenset[int] = EVERY_DAY  # weekdays (0 = Monday) on which a window starts

    def __post_init__(self) -> None:
        if not 0 <= self.start < MINUTES_PER_DAY or not 0 < self.end <= MINUTES_PER_DAY:
            raise QuietHoursError("a window runs from 00:00-23:59 to 00:01-24:00")
        if self.start == self.end % MINUTES_PER_DAY and self.end != MINUTES_PER_DAY:
            raise QuietHoursError("a window's start and end must differ")
        if not self.days or not self.days <= EVERY_DAY:
            raise QuietHoursError(f"days are some of {','.join(DAYS)}")
        if self.duration == MINUTES_PER_DAY and self.days == EVERY_DAY:
            raise QuietHoursError("a window of 24 hours on every day is never open")

    @classmethod
    def parse(cls, window: str, days: str | Iterable[str] | None = None) -> QuietHours:
        """`21:00-08:00` and `mon,tue,...` (default every day)."""
        start, sep, end = window.partition("-")
        if not sep:
            raise QuietHoursError(f"{window!r} is not a window (HH:MM-HH:MM, e.g. 21:00-08:00)")
        return cls(_minutes(start, end=False), _minutes(end, end=True), parse_days(days))

    @classmethod
    def from_event(cls, window: str, days: Sequence[str]) -> QuietHours:
        return cls.parse(window, list(days))

    @property
    def duration(self) -> int:
        """Minutes of one window."""
        return self.end - self.start if self.end > self.start else self.end + MINUTES_PER_DAY - self.start

    @property
    def window(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"

    @property
    def day_names(self) -> list[str]:
        return [DAYS[day] for day in sorted(self.days)]

    def describe(self) -> dict[str, Any]:
        return {"window": self.window, "days": self.day_names}

    def quiet_at_wall(self, wall: datetime) -> bool:
        """Whether a local wall-clock reading (naive) is inside a window."""
        minute = wall.hour * 60 + wall.minute
        offset = minute - self.start + (wall.second + wall.microsecond / 1e6) / 60
        if offset >= 0 and wall.weekday() in self.days and offset < self.duration:
            return True  # inside the window that started today
        # inside one that started yesterday and runs past midnight
        return (wall.weekday() - 1) % 7 in self.days and offset + MINUTES_PER_DAY < self.duration

    def _boundaries_after(self, wall: datetime) -> list[datetime]:
        """Window starts and ends (wall clock) after `wall`, for the next nine days, in order."""
        midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        found = []
        for days in range(-1, 10):
            day = midnight + timedelta(days=days)
            if day.weekday() in self.days:
                start = day + timedelta(minutes=self.start)
                found += [start, start + timedelta(minutes=self.duration)]
        return sorted(b for b in found if b > wall)


def parse_days(days: str | Iterable[str] | None) -> frozenset[int]:
    if days is None:
        return EVERY_DAY
    names = days.split(",") if isinstance(days, str) else list(days)
    found = set()
    for name in names:
        key = name.strip().lower()[:3]
        if key not in DAYS:
            raise QuietHoursError(f"{name!r} is not a day (one of {','.join(DAYS)})")
        found.add(DAYS.index(key))
    if not found:
        raise QuietHoursError(f"days are some of {','.join(DAYS)}")
    return frozenset(found)


# ---- one zone ----------------------------------------------------------------------------------


def quiet_in_zone(hours: QuietHours, zone: ZoneInfo, at: datetime) -> bool:
    return hours.quiet_at_wall(at.astimezone(zone).replace(tzinfo=None))


def _offset(zone: ZoneInfo, at: datetime) -> timedelta:
    offset = at.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _next_transition(zone: ZoneInfo, at: datetime, offset: timedelta, limit: datetime) -> datetime:
    """The first instant after `at` where the zone's UTC offset is no longer `offset` (to the
    second; a day at a time, then halving), or `limit`."""
    step = at
    while step < limit:
        nxt = min(step + _DAY, limit)
        if _offset(zone, nxt) != offset:
            low, high = int(step.timestamp()), int(nxt.timestamp()) + 1
            while high - low > 1:
                middle = (low + high) // 2
                if _offset(zone, datetime.fromtimestamp(middle, UTC)) == offset:
                    low = middle
                else:
                    high = middle
            return max(datetime.fromtimestamp(high, UTC), at + timedelta(microseconds=1))
        step = nxt
    return limit


def next_change_in_zone(hours: QuietHours, zone: ZoneInfo, at: datetime) -> datetime | None:
    """The first instant after `at` when the zone's quiet state is not what it is at `at`; None
    if not within HORIZON."""
    quiet = quiet_in_zone(hours, zone, at)
    limit = at + HORIZON
    current = at
    while current < limit:
        offset = _offset(zone, current)
        segment_end = _next_transition(zone, current, offset, limit)
        wall = (current + offset).replace(tzinfo=None)
        for boundary in hours._boundaries_after(wall):  # the offset is fixed up to segment_end
            instant = (boundary - offset).replace(tzinfo=UTC)
            if instant >= segment_end:
                break
            if quiet_in_zone(hours, zone, instant) != quiet:
                return instant
        current = segment_end
        if current < limit and quiet_in_zone(hours, zone, current) != quiet:
            return current
    return None


# ---- a number's zones --------------------------------------------------------------------------


@dataclass(frozen=True)
class QuietState:
    """Whether it is quiet for a set of zones at an instant, and until when that holds: for a
    quiet state the instant it opens (None: not within HORIZON), for an open one the instant
    quiet begins in one of the zones (at most HORIZON ahead)."""

    quiet: bool
    until: datetime | None


def quiet_state(hours: QuietHours, zones: Sequence[ZoneInfo], at: datetime) -> QuietState:
    """Quiet while quiet in any of the zones. It opens when every zone is open at once: the
    latest of the quiet zones' openings, looked at again (another zone may have gone quiet)."""
    if not any(quiet_in_zone(hours, zone, at) for zone in zones):
        changes = [next_change_in_zone(hours, zone, at) for zone in zones]
        return QuietState(False, min((c for c in changes if c is not None), default=at + HORIZON))
    moment = at
    for _ in range(_MAX_ZONE_STEPS):
        quiet = [zone for zone in zones if quiet_in_zone(hours, zone, moment)]
        if not quiet:
            return QuietState(True, moment)
        openings = [next_change_in_zone(hours, zone, moment) for zone in quiet]
        if any(opening is None for opening in openings):
            return QuietState(True, None)
        moment = max(o for o in openings if o is not None)
        if moment - at > HORIZON:
            break
    return QuietState(True, None)


def may_send(hours: QuietHours, msisdn: str, at: datetime, default_region: str) -> tuple[bool, datetime | None]:
    """May a message to `msisdn` (E.164 digits) go at `at`; and if not, when does its window
    next open (None: not within HORIZON, e.g. zones that are never all open at once)."""
    state = quiet_state(hours, zone_infos(zones_for_number(msisdn, default_region)), at)
    return (True, None) if not state.quiet else (False, state.until)


# ---- zones of a number -------------------------------------------------------------------------
#
# phonenumbers.timezone.time_zones_for_number parses the number (~40-70 us) to learn its type: a
# geographic number (fixed line, FIXED_LINE_OR_MOBILE, a mobile in the few countries whose
# mobiles are geographic) takes the zones of its longest prefix in the time-zone metadata, any
# other valid number its country's zones. Numbers reach the dispatcher already checked (valid
# mobiles, or route numbers), so the type is known from the country: geographic where the main
# region's mobile and fixed-line patterns are the same (NANPA: FIXED_LINE_OR_MOBILE) or mobiles
# are geographic; else the country's zones. So the answer depends on the longest prefix only,
# and is cached by it (at most the metadata's 3 240 prefixes).


@cache
def _country_zones(country_code: str) -> tuple[str, ...] | None:
    zones = TIMEZONE_DATA.get(country_code)
    return None if zones is None or zones == ("Etc/Unknown",) else zones


@cache
def _geographic(country_code: int) -> bool:
    if country_code in _GEO_MOBILE_COUNTRIES:
        return True
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    metadata = PhoneMetadata.metadata_for_region(regions[0], None) if regions else None
    return bool(metadata is not None and metadata.same_mobile_and_fixed_line_pattern)


def _country_code_of(msisdn: str) -> str | None:
    for length in (1, 2, 3):
        if int(msisdn[:length] or 0) in COUNTRY_CODE_TO_REGION_CODE:
            return msisdn[:length]
    return None


@cache
def _zones_for_prefix(prefix: str, country_code: str) -> tuple[str, ...] | None:
    country = _country_zones(country_code)
    found = TIMEZONE_DATA.get(prefix) if prefix else None
    if found == ("Etc/Unknown",):
        found = None
    if found is None or found == country:
        return country
    return found if _geographic(int(country_code)) else (country or found)


def _longest_prefix(msisdn: str) -> str:
    for length in range(min(TIMEZONE_LONGEST_PREFIX, len(msisdn)), 0, -1):
        if msisdn[:length] in TIMEZONE_DATA:
            return msisdn[:length]
    return ""


@cache
def _region_zones(region: str) -> tuple[str, ...]:
    code = country_code_for_region(region.upper())
    return (_country_zones(str(code)) or ("UTC",)) if code else ("UTC",)


def zones_for_number(msisdn: str, default_region: str) -> tuple[str, ...]:
    """The time zones (IANA names) of an E.164 number, as libphonenumber's metadata gives them;
    the default region's zones when it gives none."""
    country_code = _country_code_of(msisdn)
    zones = _zones_for_prefix(_longest_prefix(msisdn), country_code) if country_code else None
    return zones or _region_zones(default_region)


@cache
def zone_infos(names: tuple[str, ...]) -> tuple[ZoneInfo, ...]:
    return tuple(ZoneInfo(name) for name in names)
