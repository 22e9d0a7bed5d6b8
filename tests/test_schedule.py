"""Start/End parsing and the scheduling rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.schedule import check_schedule, parse_timestamp

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_upstream_format_parses_as_aware_utc() -> None:
    parsed = parse_timestamp("2016-07-19 11:05")
    assert parsed == datetime(2016, 7, 19, 11, 5, tzinfo=UTC)
    assert parsed.tzinfo is UTC


def test_seconds_are_accepted() -> None:
    assert parse_timestamp("2016-07-19 11:05:30") == datetime(2016, 7, 19, 11, 5, 30, tzinfo=UTC)


@pytest.mark.parametrize("value", ["2016-07-19T11:05", "2016-07-19T11:05:00", " 2016-07-19 11:05 "])
def test_t_separator_and_surrounding_spaces_are_accepted(value: str) -> None:
    assert parse_timestamp(value) == datetime(2016, 7, 19, 11, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "next tuesday",
        "",
        "2016-13-01 10:00",
        "2016-02-30 10:00",
        "2016-07-19",
        "19/07/2016 11:05",
        "2016-07-19 25:00",
    ],
)
def test_garbage_is_a_parse_error_naming_the_field(value: str) -> None:
    with pytest.raises(FileRejected) as caught:
        parse_timestamp(value, "End")
    assert caught.value.code == ErrorCode.PARSE_ERROR
    assert "End" in caught.value.detail


def test_end_before_start_is_incorrect() -> None:
    with pytest.raises(FileRejected) as caught:
        check_schedule(datetime(2027, 1, 2, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), NOW)
    assert caught.value.code == ErrorCode.INCORRECT_SCHEDULED_DATE


def test_end_equal_to_start_is_incorrect() -> None:
    moment = datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(FileRejected) as caught:
        check_schedule(moment, moment, NOW)
    assert caught.value.code == ErrorCode.INCORRECT_SCHEDULED_DATE


def test_end_already_past_is_incorrect() -> None:
    with pytest.raises(FileRejected) as caught:
        check_schedule(None, datetime(2026, 11, 25, 11, 59, tzinfo=UTC), NOW)
    assert caught.value.code == ErrorCode.INCORRECT_SCHEDULED_DATE


def test_end_exactly_now_is_incorrect() -> None:
    with pytest.raises(FileRejected) as caught:
        check_schedule(None, NOW, NOW)
    assert caught.value.code == ErrorCode.INCORRECT_SCHEDULED_DATE


def test_start_in_the_past_is_fine() -> None:
    check_schedule(datetime(2020, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), NOW)


def test_no_end_is_fine_whatever_the_start() -> None:
    check_schedule(datetime(2020, 1, 1, tzinfo=UTC), None, NOW)
    check_schedule(datetime(2030, 1, 1, tzinfo=UTC), None, NOW)
    check_schedule(None, None, NOW)


def test_end_in_the_future_after_start_is_fine() -> None:
    check_schedule(NOW, datetime(2026, 11, 25, 12, 1, tzinfo=UTC), NOW)
