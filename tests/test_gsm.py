"""GSM 03.38: alphabet membership, septets, and 160/153 part counting."""

from __future__ import annotations

import gsm0338  # noqa: F401 - registers the "gsm03.38" codec used as a cross-check
import pytest

from sftpsms.gsm import BASIC, EXTENSION, count_parts, find_non_gsm, septet_count, split_parts


def test_160_basic_characters_fit_one_part() -> None:
    assert count_parts("a" * 160) == 1


def test_161_characters_need_two_parts_of_153() -> None:
    assert count_parts("a" * 161) == 2
    assert count_parts("a" * 306) == 2
    assert count_parts("a" * 307) == 3


def test_extension_characters_count_two_septets() -> None:
    assert septet_count("€[]") == 6
    assert count_parts("a" * 159 + "€") == 2
    assert count_parts("a" * 158 + "€") == 1


def test_an_escape_pair_is_never_split_across_parts() -> None:
    parts = split_parts("a" * 152 + "€" + "b" * 10)
    assert parts[0] == "a" * 152 and parts[1].startswith("€")
    assert count_parts("a" * 152 + "€" + "b" * 10) == len(parts) == 2


def test_empty_text_has_no_parts() -> None:
    assert count_parts("") == 0 and split_parts("") == []


@pytest.mark.parametrize("char", ["✓", "😀", "`", "ú", "\t"])
def test_characters_outside_the_alphabet_are_found(char: str) -> None:
    assert find_non_gsm(f"ok {char} ok") == char


def test_the_whole_alphabet_is_gsm_and_agrees_with_the_gsm0338_codec() -> None:
    text = BASIC.replace("\x1b", "") + EXTENSION
    assert find_non_gsm(text) is None
    assert septet_count(text) == len(text.encode("gsm03.38"))


@pytest.mark.parametrize("text", ["Hello world", "Price: €5 [sale] {now}", "Ñandu ÄÖÜ äöü ß", "a^b|c~d\\e"])
def test_septet_counts_agree_with_the_gsm0338_codec(text: str) -> None:
    assert septet_count(text) == len(text.encode("gsm03.38"))
