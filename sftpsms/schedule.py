"""Start and End of a send: parsing (`YYYY-MM-DD hh:mm`, UTC) and the rules between them."""

from __future__ import annotations

from datetime import UTC, datetime

from sftpsms.errors import ErrorCode, FileRejected

# The upstream format first; seconds and an ISO 'T' are accepted because clients send them.
FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def parse_timestamp(value: str, field: str = "date") -> datetime:
    """A tz-aware UTC datetime; FileRejected(File.ParseError) naming `field` when it is no date."""
    text = value.strip()
    for layout in FORMATS:
        try:
            return datetime.strptime(text, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise FileRejected(
        ErrorCode.PARSE_ERROR, f"{field} {value!r} is not a date like 2026-07-19 11:05 (UTC)"
    )


def check_schedule(start: datetime | None, end: datetime | None, now: datetime) -> None:
    """FileRejected(IncorrectScheduledDate) when End is not after Start or not after `now`.
    A Start in the past is fine: it means "now"."""
    if end is None:
        return
    if start is not None and end <= start:
        raise FileRejected(ErrorCode.INCORRECT_SCHEDULED_DATE, "End must be later than Start")
    if end <= now:
        raise FileRejected(ErrorCode.INCORRECT_SCHEDULED_DATE, "End is already past")
