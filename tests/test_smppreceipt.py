"""Reading the text of SMPP delivery receipts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sftpsms.smppreceipt import ReceiptUnreadable, SmppReceipt, parse_receipt


def test_the_appendix_b_layout_is_read() -> None:
    text = (
        "id:0A1B2C sub:001 dlvrd:001 submit date:2611251043 done date:2611251044 "
        "stat:DELIVRD err:000 text:Hello there"
    )
    assert parse_receipt(text) == SmppReceipt(
        message_id="0A1B2C", stat="DELIVRD", error=None, done=datetime(2026, 11, 25, 10, 44, tzinfo=UTC)
    )


def test_a_nonzero_error_code_is_kept() -> None:
    receipt = parse_receipt("id:77 sub:001 dlvrd:000 submit date:2611251043 done date:2611251044 stat:UNDELIV err:034")
    assert (receipt.stat, receipt.error) == ("UNDELIV", "034")


def test_field_names_in_any_case_and_order() -> None:
    receipt = parse_receipt("STAT:EXPIRED ID:123 Err:000")
    assert (receipt.message_id, receipt.stat, receipt.error, receipt.done) == ("123", "EXPIRED", None, None)


def test_dates_with_seconds_are_read() -> None:
    receipt = parse_receipt("id:1 done date:261125104459 stat:DELIVRD")
    assert receipt.done == datetime(2026, 11, 25, 10, 44, 59, tzinfo=UTC)


def test_an_unreadable_date_is_left_out() -> None:
    assert parse_receipt("id:1 done date:yesterday stat:DELIVRD").done is None


def test_the_message_text_cannot_fake_fields() -> None:
    receipt = parse_receipt("id:9 stat:DELIVRD err:000 text:stat:UNDELIV id:1")
    assert (receipt.message_id, receipt.stat) == ("9", "DELIVRD")


@pytest.mark.parametrize("text", ["", "hello", "id:5 sub:001", "stat:DELIVRD err:000"])
def test_a_receipt_without_id_or_stat_is_unreadable(text: str) -> None:
    with pytest.raises(ReceiptUnreadable):
        parse_receipt(text)
