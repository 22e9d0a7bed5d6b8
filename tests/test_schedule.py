"""Start/End parsing and the scheduling rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.schedule import check_schedule, parse_timestamp

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_upstream_format_is_utc() -> None:
    assert parse_timestamp("2016-07-19 11:05") == datetime(2016, 7, 19, 11, 5, tzinfo=UTC)


def test_seconds_and_t_separator_are_accepted() -> None:
    assert parse_timestamp("2016-07-19T11:05:30") == datetime(2016, 7, 19, 11, 5, 30, tzinfo=UTC)


def test_garbage_is_a_parse_error() -> None:
    with pytest.raises(FileRejected) as caught:
        parse_timestamp("next tuesday")
    assert caught.value.code == ErrorCode.PARSE_ERROR


def test_end_before_start_is_incorrect() -> None:
    with pytest.raises(FileRejected) as caught:
        check_schedule(datetime(2027, 1, 2, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), NOW)
    assert caught.value.code == ErrorCode.INCORRECT_SCHEDULED_DATE


def test_end_already_past_is_incorrect() -> None:
    with pytest.raises(FileRejected) as caught:
        check_schedule(None, datetime(2026, 11, 25, 11, 59, tzinfo=UTC), NOW)
    assert caught.value.code == ErrorCode.INCORRECT_SCHEDULED_DATE


def test_start_in_the_past_is_fine() -> None:
    check_schedule(datetime(2020, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), NOW)
    check_schedule(datetime(2020, 1, 1, tzinfo=UTC), None, NOW)
