"""Account and file names (PRODUCT.md §1, §2) and how names are quoted in logs."""

from __future__ import annotations

import pytest

from sftpsms.names import BadName, check_account_name, check_file_name, is_account_name, quoted


@pytest.mark.parametrize("name", ["demo", "a", "Acme-2.sub_1", "0zero", "x" * 64])
def test_valid_account_names(name: str) -> None:
    assert check_account_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "../accounts/demo", "../evil", "sp ace", "bad/name", ".hidden", "-dash", "_under", "x" * 65,
             "ünï", "a\nb", "a\\b", "demo\x00", "."],
)  # fmt: skip
def test_invalid_account_names_are_refused_with_a_reason(name: str) -> None:
    with pytest.raises(BadName, match="account name"):
        check_account_name(name)
    assert not is_account_name(name)


@pytest.mark.parametrize("name", ["a\nb.json", "t\tab.json", "nul\x00.json", "rtl\u202egnp.json", "a/b.json", "a\\b.json", "", ".."])
def test_file_names_with_separators_or_control_characters_are_refused(name: str) -> None:
    with pytest.raises(BadName):
        check_file_name(name)


def test_a_file_name_over_255_bytes_is_refused() -> None:
    check_file_name("é" * 127 + ".")  # 255 bytes
    with pytest.raises(BadName, match="255 bytes"):
        check_file_name("é" * 128)


def test_quoted_escapes_newlines_and_shows_the_ends() -> None:
    assert quoted("plain-name_1.json") == "plain-name_1.json"
    assert quoted("a\nb") == "'a\\nb'"
    assert quoted("sp ace.json") == "'sp ace.json'"
    assert "\n" not in quoted("x\r\ny\x1b[31m")
