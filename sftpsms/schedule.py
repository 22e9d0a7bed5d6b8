"""Start and End of a send: parsing (`YYYY-MM-DD hh:mm`, UTC) and the rules between them."""

from __future__ import annotations

from datetime import UTC, datetime

from sftpsms.errors import ErrorCode, FileRejected

FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def parse_timestamp(value: str, field: str = "date") -> datetime:
    text = value.strip()
    for layout in FORMATS:
        try:
            return datetime.strptime(text, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise FileRejected(ErrorCode.PARSE_ERROR, f"{field} {value!r} is not a date like 2026-07-19 11:05 (UTC)")


def check_schedule(start: datetime | None, end: datetime | None, now: datetime) -> None:
    if end is None:
        return
    if start is not None and end <= start:
        raise FileRejected(ErrorCode.INCORRECT_SCHEDULED_DATE, "End must be later than Start")
    if end <= now:
        raise FileRejected(ErrorCode.INCORRECT_SCHEDULED_DATE, "End is already past")
