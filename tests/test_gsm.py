"""GSM 03.38: alphabet membership, septets, 160/153 part counting, and encoding parts for the wire."""

from __future__ import annotations

import random

import gsm0338  # noqa: F401 - registers the "gsm03.38" codec used as a cross-check
import pytest

from sftpsms.gsm import (
    BASIC,
    DATA_CODING_GSM,
    DATA_CODING_UCS2,
    EXTENSION,
    NotGsmText,
    count_parts,
    decode_gsm,
    encode_gsm,
    encode_parts,
    find_non_gsm,
    pack_septets,
    septet_count,
    split_parts,
    unpack_septets,
)

ALPHABET = BASIC.replace("\x1b", "") + EXTENSION  # 127 basic characters (0x1B is the escape) + 10


def _reference_parts(text: str) -> list[str]:
    """The definition, one character at a time: fill a part until the next character's septets
    would not fit in 153."""
    if septet_count(text) <= 160:
        return [text] if text else []
    parts, current, used = [], "", 0
    for char in text:
        cost = 2 if char in EXTENSION else 1
        if used + cost > 153:
            parts.append(current)
            current, used = "", 0
        current += char
        used += cost
    return [*parts, current]


def test_160_basic_characters_fit_one_part() -> None:
    assert count_parts("a" * 160) == 1
    assert split_parts("a" * 160) == ["a" * 160]


def test_161_characters_need_two_parts() -> None:
    assert count_parts("a" * 161) == 2


def test_concatenated_parts_hold_153_septets_each() -> None:
    assert count_parts("a" * 306) == 2
    assert count_parts("a" * 307) == 3
    assert [len(part) for part in split_parts("a" * 307)] == [153, 153, 1]


def test_extension_characters_count_two_septets() -> None:
    assert septet_count("€[]") == 6
    assert septet_count("\f^{}\\[~]|€") == 20
    assert count_parts("a" * 159 + "€") == 2
    assert count_parts("a" * 158 + "€") == 1


def test_an_escape_pair_is_never_split_across_parts() -> None:
    text = "a" * 152 + "€" + "b" * 10
    parts = split_parts(text)
    assert parts == ["a" * 152, "€" + "b" * 10]
    assert count_parts(text) == 2


def test_an_escape_pair_that_straddles_can_add_a_part() -> None:
    # 152 + 2 + 152 = 306 septets would be two full parts, but the pair cannot be split.
    text = "a" * 152 + "[" + "b" * 152
    assert [septet_count(part) for part in split_parts(text)] == [152, 153, 1]
    assert count_parts(text) == 3


def test_parts_made_only_of_extension_characters_hold_76_each() -> None:
    assert [len(part) for part in split_parts("€" * 153)] == [76, 76, 1]
    assert count_parts("€" * 80) == 1  # 160 septets
    assert count_parts("€" * 81) == 2
    assert count_parts("€" * 152) == 2
    assert count_parts("€" * 153) == 3


def test_empty_text_has_no_parts() -> None:
    assert count_parts("") == 0 and split_parts("") == [] and septet_count("") == 0


def test_split_parts_agrees_with_the_character_by_character_definition() -> None:
    rng = random.Random(338)
    for _ in range(2000):
        pool = rng.choice([ALPHABET, "ab€[", "a" * 20 + "^", EXTENSION])
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 700)))
        parts = split_parts(text)
        assert parts == _reference_parts(text), text
        assert "".join(parts) == text
        assert count_parts(text) == len(parts)
        assert all(septet_count(part) <= (160 if len(parts) == 1 else 153) for part in parts)


@pytest.mark.parametrize("char", ["✓", "😀", "`", "ú", "\t", "\x00", "\x7f", "\x1b", "ç", "\u0301"])
def test_characters_outside_the_alphabet_are_found(char: str) -> None:
    assert find_non_gsm(f"ok {char} ok") == char


def test_the_first_non_gsm_character_is_reported() -> None:
    assert find_non_gsm("Ünïcode ✓ and `tick`") == "ï"
    assert find_non_gsm("plain ascii with `tick` and ✓") == "`"


def test_pure_gsm_text_has_no_non_gsm_character() -> None:
    assert (
        find_non_gsm("Hello, world! 50% off @ Joe's #1 (today) ~ {now} [only] | ^_^ \\o/") is None
    )
    assert find_non_gsm("Ñandu ÄÖÜ äöü ß £5 €5 ¥5 ¡Hola! ¿Qué? Δ\n\r\f") is None
    assert find_non_gsm("") is None


def test_the_alphabet_has_127_basic_and_10_extension_characters() -> None:
    assert len(set(BASIC) - {"\x1b"}) == 127 and len(set(EXTENSION)) == 10
    assert not set(BASIC) & set(EXTENSION)


def test_alphabet_membership_agrees_with_the_gsm0338_codec_for_every_bmp_character() -> None:
    for code in range(0x10000):
        char = chr(code)
        if 0xD800 <= code < 0xE000 or char == "\x1b":
            continue  # surrogates are no text; the codec passes the bare escape through
        try:
            septets = len(char.encode("gsm03.38"))
        except UnicodeEncodeError:
            assert find_non_gsm(char) == char, repr(char)
        else:
            assert find_non_gsm(char) is None, repr(char)
            assert septet_count(char) == septets, repr(char)


def test_the_bare_escape_character_is_not_gsm_text() -> None:
    assert find_non_gsm("a\x1bb") == "\x1b"


def test_septet_counts_agree_with_the_gsm0338_codec_on_random_text() -> None:
    rng = random.Random(20261125)
    for _ in range(500):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 400)))
        assert find_non_gsm(text) is None
        assert septet_count(text) == len(text.encode("gsm03.38")), text


# --- encoding for the wire -------------------------------------------------------------------


def test_encoding_agrees_with_the_gsm0338_codec_for_every_character() -> None:
    assert encode_gsm(ALPHABET) == ALPHABET.encode("gsm03.38")


def test_extension_characters_encode_as_escape_and_code() -> None:
    assert encode_gsm("€[") == b"\x1b\x65\x1b\x3c"


def test_decoding_inverts_encoding() -> None:
    assert decode_gsm(encode_gsm(ALPHABET)) == ALPHABET


def test_text_outside_the_alphabet_does_not_encode() -> None:
    with pytest.raises(NotGsmText):
        encode_gsm("naïve")


def test_packing_puts_eight_septets_in_seven_octets() -> None:
    # The classic example of 3GPP TS 23.038: "hellohello" packs to E8 32 9B FD 46 97 D9 EC 37.
    assert pack_septets(encode_gsm("hellohello")) == bytes.fromhex("E8329BFD4697D9EC37")


def test_unpacking_inverts_packing_with_fill_bits() -> None:
    septets = encode_gsm(ALPHABET)
    assert unpack_septets(pack_septets(septets, fill_bits=1), len(septets), fill_bits=1) == septets


def test_a_short_message_is_one_part_without_a_header() -> None:
    assert encode_parts("Hello", reference=7) == (DATA_CODING_GSM, [b"Hello"])


def test_long_gsm_text_gets_the_same_reference_in_every_part_header() -> None:
    text = "x" * 400
    coding, parts = encode_parts(text, reference=0x1A)
    assert coding == DATA_CODING_GSM
    assert [part[:6] for part in parts] == [bytes([5, 0, 3, 0x1A, 3, n]) for n in (1, 2, 3)]
    assert [len(part) - 6 for part in parts] == [153, 153, 94]
    assert b"".join(part[6:] for part in parts) == encode_gsm(text)


def test_gsm_parts_follow_split_parts() -> None:
    text = "[" * 100 + "a" * 100
    _, parts = encode_parts(text, reference=1)
    assert [decode_gsm(part[6:]) for part in parts] == split_parts(text)


def test_non_gsm_text_is_ucs2_in_parts_of_67() -> None:
    text = "Привет " * 20  # 140 characters
    coding, parts = encode_parts(text, reference=2)
    assert coding == DATA_CODING_UCS2
    assert [(len(part) - 6) // 2 for part in parts] == [67, 67, 6]
    assert "".join(part[6:].decode("utf-16-be") for part in parts) == text


def test_short_non_gsm_text_is_one_ucs2_part() -> None:
    assert encode_parts("Привет", reference=3) == (DATA_CODING_UCS2, ["Привет".encode("utf-16-be")])


def test_a_character_outside_the_basic_plane_is_never_split() -> None:
    text = "ж" * 66 + "😀" + "ж" * 10  # the emoji's two code units would straddle parts 1 and 2
    _, parts = encode_parts(text, reference=4)
    assert [(len(part) - 6) // 2 for part in parts] == [66, 12]
    assert "".join(part[6:].decode("utf-16-be") for part in parts) == text


def test_more_than_255_parts_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        encode_parts("x" * (153 * 255 + 1), reference=5)
