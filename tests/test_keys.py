"""Case-insensitive keys ignoring `_`, and values that come as strings."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sftpsms.errors import FileRejected
from sftpsms.keys import coerce_bool, coerce_int, coerce_str, normalise_key


@pytest.mark.parametrize("key", ["Message_Template", "message_template", "messageTemplate", "MESSAGETEMPLATE"])
def test_spellings_of_one_key_normalise_alike(key: str) -> None:
    assert normalise_key(key) == "messagetemplate"


@pytest.mark.parametrize(("value", "expected"), [("1", 1), (7, 7), (Decimal("3.0"), 3), (" 12 ", 12)])
def test_whole_numbers_may_come_as_strings(value: object, expected: int) -> None:
    assert coerce_int(value, "Max_Errors") == expected


@pytest.mark.parametrize("value", ["abc", True, Decimal("1.5"), None, [1]])
def test_other_values_are_not_numbers(value: object) -> None:
    with pytest.raises(FileRejected):
        coerce_int(value, "Max_Errors")


@pytest.mark.parametrize(("value", "expected"), [("True", True), ("false", False), ("1", True), ("0", False), (True, True), (0, False)])
def test_booleans_may_come_as_strings(value: object, expected: bool) -> None:
    assert coerce_bool(value, "Check_OptOuts") is expected


def test_maybe_is_not_a_boolean() -> None:
    with pytest.raises(FileRejected):
        coerce_bool("maybe", "Check_OptOuts")


def test_numbers_become_their_exact_digits() -> None:
    assert coerce_str(27831234567, "msisdn") == "27831234567"
    assert coerce_str(Decimal("27831234567"), "msisdn") == "27831234567"
