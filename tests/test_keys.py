"""Key normalisation and the coercion of values that may come as strings."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.keys import coerce_bool, coerce_int, coerce_str, normalise_key


def parse_error(call: Callable[[object, str], object], value: object, field: str = "Max_Errors") -> str:
    with pytest.raises(FileRejected) as caught:
        call(value, field)
    assert caught.value.code == ErrorCode.PARSE_ERROR
    assert field in caught.value.detail
    return caught.value.detail


@pytest.mark.parametrize("key", ["Message_Template", "message_template", "messageTemplate", "MESSAGETEMPLATE"])
def test_key_spellings_normalise_to_one_key(key: str) -> None:
    assert normalise_key(key) == "messagetemplate"


@pytest.mark.parametrize("value", ["1", " 1 ", 1, 1.0, Decimal("1"), Decimal("1.0"), Decimal("1E+0")])
def test_coerce_int_accepts_whole_numbers_and_digit_strings(value: object) -> None:
    assert coerce_int(value, "Max_Errors") == 1


@pytest.mark.parametrize("value", ["abc", True, False, 1.5, Decimal("1.5"), "1.5", "", None, [], {}])
def test_coerce_int_rejects_anything_else_naming_the_field(value: object) -> None:
    parse_error(coerce_int, value)


def test_coerce_int_refuses_huge_exponents_without_building_the_number() -> None:
    parse_error(coerce_int, Decimal("1E+999999"))


@pytest.mark.parametrize("value", [True, "true", "TRUE", "True", "1", 1, "yes", "Yes", Decimal("1")])
def test_coerce_bool_reads_true_spellings(value: object) -> None:
    assert coerce_bool(value, "Check_OptOuts") is True


@pytest.mark.parametrize("value", [False, "false", "False", "0", 0, "no", "NO"])
def test_coerce_bool_reads_false_spellings(value: object) -> None:
    assert coerce_bool(value, "Check_OptOuts") is False


@pytest.mark.parametrize("value", ["maybe", 2, "", None, 0.5])
def test_coerce_bool_rejects_other_values_naming_the_field(value: object) -> None:
    assert "true or false" in parse_error(coerce_bool, value, "Check_OptOuts")


@pytest.mark.parametrize("value", [27831234567, Decimal("27831234567")])
def test_coerce_str_keeps_the_exact_digits_of_a_big_integer(value: object) -> None:
    assert coerce_str(value, "msisdn") == "27831234567"


def test_coerce_str_spells_decimals_without_exponent() -> None:
    assert (coerce_str(Decimal("1E+3"), "value1"), coerce_str(Decimal("2.50"), "value1")) == ("1000", "2.50")


def test_coerce_str_spells_floats_as_written() -> None:
    assert coerce_str(0.1, "value1") == "0.1"


@pytest.mark.parametrize("value", [{}, [], True, None])
def test_coerce_str_rejects_objects_arrays_booleans_and_null(value: object) -> None:
    assert "must be a string" in parse_error(coerce_str, value, "Email")


def test_error_detail_shows_the_value_as_json() -> None:
    assert parse_error(coerce_int, "abc") == 'Max_Errors must be a whole number, got "abc"'
