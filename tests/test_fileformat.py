"""The version-7 reader: header fields, key spellings, contacts as a stream, and every way a file fails."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from sftpsms import fileformat
from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.fileformat import Header, RawContact, iter_contacts, read_header
from sftpsms.limits import Limits


def write(tmp_path: Path, body: object | str | bytes, name: str = "f.json") -> Path:
    path = tmp_path / name
    if isinstance(body, bytes):
        path.write_bytes(body)
    elif isinstance(body, str):
        path.write_text(body, encoding="utf-8")
    else:
        path.write_text(json.dumps(body), encoding="utf-8")
    return path


def read(path: Path) -> tuple[Header, list[RawContact]]:
    header = read_header(path)
    return header, list(iter_contacts(path, header))


def header_error(path: Path) -> FileRejected:
    with pytest.raises(FileRejected) as caught:
        read_header(path)
    return caught.value


def minimal(**extra: object) -> dict[str, object]:
    return {"Version": 7, "Message_Template": "Hi", **extra, "Contacts": [{"msisdn": "27831234567"}]}


# ---- the upstream examples --------------------------------------------------------------------


def test_upstream_example_1_template_for_every_contact(tmp_path: Path) -> None:
    body = {
        "version": 7,
        "message_template": "Hello to the SMS world.",
        "contacts": [{"msisdn": "1111111111"}, {"msisdn": "2222222222"}, {"msisdn": "3333333333"}, {"msisdn": "4444444444"}],
    }
    header, contacts = read(write(tmp_path, body))
    assert header.message_template == "Hello to the SMS world."
    assert [c.msisdn for c in contacts] == ["1111111111", "2222222222", "3333333333", "4444444444"]
    assert [c.index for c in contacts] == [0, 1, 2, 3]


def test_upstream_example_2_every_header_field(tmp_path: Path) -> None:
    body = {
        "version": 7,
        "start": "2017-11-02 06:19",
        "end": "2017-11-02 06:34",
        "senderId": "Fixed",
        "check_optouts": True,
        "email": "someone@example.com",
        "max_errors": "1",
        "message_template": "Message sent to @@value1@@",
        "contacts": [
            {"msisdn": "1111111111", "customerId": "AccJohn237", "values": {"value1": "John"}},
            {"msisdn": "3333333333", "customerId": "TempAcc1032", "message": "Specific message for msisdn 3333333333"},
        ],
    }
    header, contacts = read(write(tmp_path, body))
    assert header == Header(
        version=7,
        email="someone@example.com",
        start="2017-11-02 06:19",
        end="2017-11-02 06:34",
        sender_id="Fixed",
        check_optouts=True,
        message_template="Message sent to @@value1@@",
        max_errors=1,
        warnings=(),
        contacts_key="contacts",
    )
    assert contacts == [
        RawContact(0, "1111111111", "AccJohn237", {"value1": "John"}, None),
        RawContact(1, "3333333333", "TempAcc1032", {}, "Specific message for msisdn 3333333333"),
    ]


def test_upstream_example_3_one_contact_overrides_the_template(tmp_path: Path) -> None:
    body = {
        "version": 7,
        "message_template": "Message sent to 1111111111, 2222222222 and 4444444444",
        "contacts": [
            {"msisdn": "1111111111"},
            {"msisdn": "2222222222"},
            {"msisdn": "3333333333", "message": "Specific message for msisdn 3333333333"},
            {"msisdn": "4444444444"},
        ],
    }
    _, contacts = read(write(tmp_path, body))
    assert [c.message for c in contacts] == [None, None, "Specific message for msisdn 3333333333", None]


def test_upstream_example_4_values_per_contact(tmp_path: Path) -> None:
    body = {
        "version": 7,
        "message_template": "Message sent to @@value1@@,  Welcome @@value2@@ @@value3@@ @@value4@@",
        "contacts": [
            {"msisdn": "1111111111", "values": {"value1": "1111111111", "value2": "Title", "value3": "1stName", "value4": "Surname"}},
            {"msisdn": "2222222222", "values": {"value1": "2222222222", "value3": "Jane", "value4": "Doe"}},
            {"msisdn": "3333333333", "message": "Specific message for msisdn 3333333333"},
        ],
    }
    _, contacts = read(write(tmp_path, body))
    assert [c.values for c in contacts] == [
        {"value1": "1111111111", "value2": "Title", "value3": "1stName", "value4": "Surname"},
        {"value1": "2222222222", "value3": "Jane", "value4": "Doe"},
        {},
    ]


# ---- spellings and coercions ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["Message_Template", "message_template", "messageTemplate", "MESSAGE_TEMPLATE"])
def test_header_keys_match_in_any_spelling(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, {"VERSION": 7, key: "Hi", "contacts": [{"msisdn": "1"}]})
    assert read_header(path).message_template == "Hi"


@pytest.mark.parametrize("key", ["Contacts", "contacts", "CONTACTS", "_Contacts_"])
def test_contacts_key_is_found_in_any_spelling(tmp_path: Path, key: str) -> None:
    header, contacts = read(write(tmp_path, {"Version": 7, key: [{"msisdn": "1"}]}))
    assert (header.contacts_key, [c.msisdn for c in contacts]) == (key, ["1"])


@pytest.mark.parametrize("key", ["customerId", "customer_id", "CustomerID", "CUSTOMER_ID"])
def test_contact_keys_match_in_any_spelling(tmp_path: Path, key: str) -> None:
    _, contacts = read(write(tmp_path, {"Version": 7, "Contacts": [{"MSISDN": "1", key: "c-1", "Values": {"Value_1": "x"}}]}))
    assert (contacts[0].customer_id, contacts[0].values) == ("c-1", {"value1": "x"})


def test_sender_id_key_spellings_match(tmp_path: Path) -> None:
    assert read_header(write(tmp_path, minimal(Sender_ID="Acme"))).sender_id == "Acme"


def test_defaults_apply_when_optional_fields_are_absent(tmp_path: Path) -> None:
    header = read_header(write(tmp_path, {"Version": 7, "Contacts": [{"msisdn": "1"}]}))
    assert (header.sender_id, header.check_optouts, header.max_errors, header.email, header.message_template) == (
        "Fixed",
        True,
        None,
        None,
        None,
    )


def test_numbers_and_booleans_may_come_as_strings(tmp_path: Path) -> None:
    header = read_header(write(tmp_path, minimal(Version="7", Max_Errors="5", Check_OptOuts="False")))
    assert (header.version, header.max_errors, header.check_optouts) == (7, 5, False)


def test_numbers_in_contacts_keep_their_exact_digits(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Version": 7, "Contacts": [{"msisdn": 27831234567, "customerId": 12, "values": {"value1": 2.50}}]}')
    _, contacts = read(path)
    assert (contacts[0].msisdn, contacts[0].customer_id, contacts[0].values) == ("27831234567", "12", {"value1": "2.50"})


def test_numeric_sender_id_becomes_its_digits(tmp_path: Path) -> None:
    assert read_header(write(tmp_path, minimal(SenderID=27831234567))).sender_id == "27831234567"


def test_null_optional_fields_count_as_absent(tmp_path: Path) -> None:
    header = read_header(write(tmp_path, minimal(Email=None, Max_Errors=None, Check_OptOuts=None, SenderID=None)))
    assert (header.email, header.max_errors, header.check_optouts, header.sender_id) == (None, None, True, "Fixed")


# ---- encodings and line endings ---------------------------------------------------------------


def test_leading_bom_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf" + json.dumps(minimal()).encode())
    _, contacts = read(path)
    assert contacts[0].msisdn == "27831234567"


@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n"])
def test_every_line_ending_is_whitespace(tmp_path: Path, newline: str) -> None:
    text = json.dumps(minimal(), indent=2).replace("\n", newline)
    header, contacts = read(write(tmp_path, text.encode()))
    assert (header.message_template, contacts[0].msisdn) == ("Hi", "27831234567")


def test_non_ascii_text_survives(tmp_path: Path) -> None:
    _, contacts = read(write(tmp_path, {"Version": 7, "Contacts": [{"msisdn": "1", "message": "Grüße — ¡hola!"}]}))
    assert contacts[0].message == "Grüße — ¡hola!"


def test_invalid_utf8_in_the_header_is_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"Version": 7, "Email": "\xff", "Contacts": [{"msisdn": "1"}]}')
    error = header_error(path)
    assert error.code == ErrorCode.CORRUPT
    assert "UTF8" in error.detail or "UTF-8" in error.detail


def test_invalid_utf8_in_a_contact_fails_the_iteration_as_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"Version": 7, "Contacts": [{"msisdn": "1"}, {"msisdn": "\xc3\x28"}]}')
    header = read_header(path)
    with pytest.raises(FileRejected) as caught:
        list(iter_contacts(path, header))
    assert caught.value.code == ErrorCode.CORRUPT


# ---- files that are not what they claim -------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"hello", b"[1, 2]", b'"text"', b"{} {}", b'{"Version": 7,}'])
def test_not_one_json_object_is_corrupt(tmp_path: Path, body: bytes) -> None:
    assert header_error(write(tmp_path, body)).code == ErrorCode.CORRUPT


def test_truncated_file_is_corrupt_before_any_contact_is_read(tmp_path: Path) -> None:
    text = json.dumps({"Version": 7, "Contacts": [{"msisdn": str(n)} for n in range(5)]})
    error = header_error(write(tmp_path, text[: text.index('"3"')]))
    assert (error.code, "premature EOF" in error.detail) == (ErrorCode.CORRUPT, True)


def test_broken_contact_yields_the_contacts_before_it_then_fails_as_corrupt(tmp_path: Path) -> None:
    contacts = ", ".join(f'{{"msisdn": "{n}"}}' for n in range(3))
    path = write(tmp_path, f'{{"Version": 7, "Contacts": [{contacts}, {{"msisdn": tru}}, {{"msisdn": "4"}}]}}')
    header = read_header(path)
    seen: list[str | None] = []
    with pytest.raises(FileRejected) as caught:
        for contact in iter_contacts(path, header):
            seen.append(contact.msisdn)
    assert seen == ["0", "1", "2"]
    assert caught.value.code == ErrorCode.CORRUPT


def test_yajl_message_does_not_echo_file_content(tmp_path: Path) -> None:
    detail = header_error(write(tmp_path, b'{"Version": 7, "secret": tru}')).detail
    assert "secret" not in detail


# ---- keys after the contacts array ------------------------------------------------------------


def test_template_after_contacts_is_honoured(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Version": 7, "Contacts": [{"msisdn": "1"}], "Message_Template": "late"}')
    header, contacts = read(path)
    assert (header.message_template, [c.msisdn for c in contacts]) == ("late", ["1"])


def test_keys_after_contacts_are_honoured_when_the_file_still_ends_with_an_array(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Version": 7, "Contacts": [{"msisdn": "1"}], "Message_Template": "late", "Foo": [{"a": 1}]}')
    header = read_header(path)
    assert (header.message_template, header.warnings) == ("late", ('unknown key "Foo" ignored',))


def test_version_after_contacts_is_honoured(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Contacts": [{"msisdn": "1"}], "Version": 6}')
    assert header_error(path).code == ErrorCode.INVALID_VERSION


def test_brackets_and_escapes_inside_strings_do_not_confuse_the_end_check(tmp_path: Path) -> None:
    tricky = [{"msisdn": "1", "message": 'a]}"[{\\'}, {"msisdn": "2", "message": '\\"]'}]
    body = json.dumps({"Version": 7, "Contacts": tricky}) + "\n"
    trailing = json.dumps({"Version": 7, "Contacts": tricky, "Foo": ["]"]})
    assert read(write(tmp_path, body, "a.json"))[0].warnings == ()
    assert read(write(tmp_path, trailing, "b.json"))[0].warnings == ('unknown key "Foo" ignored',)


def test_arrays_before_contacts_do_not_confuse_the_end_check(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Foo": [[1], "[x"], "Version": 7, "Contacts": [{"msisdn": "1"}], "Bar": [2]}')
    assert read_header(path).warnings == ('unknown key "Foo" ignored', 'unknown key "Bar" ignored')


def test_contacts_as_the_last_key_takes_the_fast_path_and_reads_everything(tmp_path: Path) -> None:
    contacts = [{"msisdn": str(n), "values": {"value1": "[" * (n % 3)}} for n in range(3000)]
    header, read_back = read(write(tmp_path, {"Version": 7, "Foo": 1, "Contacts": contacts}))
    assert (header.warnings, len(read_back)) == (('unknown key "Foo" ignored',), 3000)


# ---- header rules -----------------------------------------------------------------------------


def test_unknown_keys_become_warnings_in_file_order(tmp_path: Path) -> None:
    header = read_header(write(tmp_path, minimal(Foo=1, bar={"x": 1})))
    assert header.warnings == ('unknown key "Foo" ignored', 'unknown key "bar" ignored')


def test_key_given_twice_in_two_spellings_is_a_parse_error(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Version": 7, "Message_Template": "a", "messageTemplate": "b", "Contacts": [{"msisdn": "1"}]}')
    error = header_error(path)
    assert (error.code, "messageTemplate" in error.detail) == (ErrorCode.PARSE_ERROR, True)


def test_contacts_given_twice_is_a_parse_error(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Version": 7, "Contacts": [{"msisdn": "1"}], "contacts": [{"msisdn": "2"}]}')
    assert header_error(path).code == ErrorCode.PARSE_ERROR


def test_version_as_string_is_accepted(tmp_path: Path) -> None:
    assert read_header(write(tmp_path, minimal(Version="7"))).version == 7


@pytest.mark.parametrize("version", [6, "6", 8, "seven", None, 7.5, True])
def test_other_versions_are_invalid(tmp_path: Path, version: object) -> None:
    assert header_error(write(tmp_path, minimal(Version=version))).code == ErrorCode.INVALID_VERSION


def test_missing_version_is_invalid(tmp_path: Path) -> None:
    path = write(tmp_path, {"Contacts": [{"msisdn": "1"}]})
    assert header_error(path).code == ErrorCode.INVALID_VERSION


def test_missing_contacts_is_a_missing_parameter(tmp_path: Path) -> None:
    error = header_error(write(tmp_path, {"Version": 7, "Message_Template": "Hi"}))
    assert (error.code, error.detail) == (ErrorCode.REQUIRED_PARAMETER_MISSING, "Contacts is missing")


@pytest.mark.parametrize("contacts", [{"msisdn": "1"}, "1", None])
def test_contacts_that_are_not_an_array_are_a_missing_parameter(tmp_path: Path, contacts: object) -> None:
    path = write(tmp_path, {"Version": 7, "Contacts": contacts})
    assert header_error(path).code == ErrorCode.REQUIRED_PARAMETER_MISSING


def test_empty_contacts_is_a_missing_parameter(tmp_path: Path) -> None:
    error = header_error(write(tmp_path, {"Version": 7, "Message_Template": "Hi", "Contacts": []}))
    assert (error.code, error.detail) == (ErrorCode.REQUIRED_PARAMETER_MISSING, "Contacts is empty")


@pytest.mark.parametrize(
    ("field", "value"),
    [("Max_Errors", "abc"), ("Max_Errors", -1), ("Check_OptOuts", "maybe"), ("Email", ["a@b.c"]), ("Email", True), ("Start", {})],
)
def test_bad_file_level_field_is_a_parse_error_naming_it(tmp_path: Path, field: str, value: object) -> None:
    error = header_error(write(tmp_path, minimal(**{field: value})))
    assert (error.code, field in error.detail) == (ErrorCode.PARSE_ERROR, True)


def test_key_that_would_alias_the_contacts_prefix_is_a_parse_error(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Version": 7, "Contacts.item": {"msisdn": "9"}, "Contacts": [{"msisdn": "1"}]}')
    assert header_error(path).code == ErrorCode.PARSE_ERROR


# ---- contact-level problems -------------------------------------------------------------------


def test_contact_that_is_not_an_object_gets_a_problem(tmp_path: Path) -> None:
    _, contacts = read(write(tmp_path, {"Version": 7, "Contacts": ["27831234567", {"msisdn": "1"}]}))
    assert contacts[0].problem == 'contact is "27831234567", not an object'
    assert contacts[1].problem is None


def test_values_that_are_not_an_object_give_a_problem_but_keep_the_msisdn(tmp_path: Path) -> None:
    _, contacts = read(write(tmp_path, {"Version": 7, "Contacts": [{"msisdn": "1", "values": ["x"]}]}))
    assert (contacts[0].msisdn, contacts[0].problem) == ("1", "values must be an object, got an array")


def test_object_where_text_belongs_gives_a_problem(tmp_path: Path) -> None:
    _, contacts = read(write(tmp_path, {"Version": 7, "Contacts": [{"msisdn": "1", "message": {"text": "x"}}]}))
    assert contacts[0].problem == "message must be a string, got an object"


def test_contact_key_given_twice_gives_a_problem(tmp_path: Path) -> None:
    _, contacts = read(write(tmp_path, '{"Version": 7, "Contacts": [{"msisdn": "1", "MSISDN": "2"}]}'))
    assert contacts[0].problem == 'key "MSISDN" is given twice in this contact'


def test_unknown_contact_keys_and_values_are_ignored(tmp_path: Path) -> None:
    _, contacts = read(write(tmp_path, {"Version": 7, "Contacts": [{"msisdn": "1", "x": 1, "values": {"value7": "a", "value2": "b"}}]}))
    assert (contacts[0].values, contacts[0].problem) == ({"value2": "b"}, None)


def test_contact_without_msisdn_has_none(tmp_path: Path) -> None:
    _, contacts = read(write(tmp_path, {"Version": 7, "Contacts": [{"customerId": "c"}]}))
    assert (contacts[0].msisdn, contacts[0].problem) == (None, None)


# ---- memory -----------------------------------------------------------------------------------


def test_200k_contacts_stream_in_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("w", encoding="utf-8") as out:
        out.write('{"Version": 7, "Message_Template": "Hi @@value1@@", "Contacts": [\n')
        out.write(",\n".join(f'{{"msisdn": "2783{n:07d}", "customerId": "c{n}", "values": {{"value1": "Name {n}"}}}}' for n in range(200_000)))
        out.write("\n]}\n")
    tracemalloc.start()
    try:
        header = read_header(path)
        count = sum(1 for _ in iter_contacts(path, header))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert peak < 30 * 1024 * 1024


@pytest.mark.parametrize(
    "item",
    [
        {"msisdn": "0831234567", "customerId": "C1", "values": {"value1": "a", "Value_2": "b", "other": 3}},
        {"MSISDN": "0831234567", "message": "hi"},
        {"msisdn": 27831234567, "values": {"value1": "a"}},  # a number: coerced
        {"msisdn": "0831234567", "values": {"value1": 12.5, "value2": None}},
        {"msisdn": "0831234567", "msisdn_": "0831234568"},  # the same key twice once folded
        {"msisdn": "0831234567", "values": {"value1": "a", "VALUE1": "b"}},
        {"msisdn": "0831234567", "values": ["a"]},
        {"msisdn": "0831234567", "values": {}},
        {"msisdn": None, "customerId": {"x": 1}},
        {},
        {"msisdn": "0831234567", "values": {"value1": "a", "value2": None}},  # spelt as named, a null
        {"msisdn": "0831234567", "values": {"value1": "a", "value2": 7}},  # spelt as named, a number
        {"msisdn": "0831234567", "values": {"value1": "a", "other": 7}},  # an unused key's number
        {"msisdn": "0831234567", "values": None},
        {"msisdn": "0831234567", "message": 5},
    ],
)
def test_the_usual_contact_reads_as_the_fully_checked_one(item: dict[str, object]) -> None:
    usual = fileformat._usual_contact(7, item)
    assert usual is None or usual == fileformat._checked_contact(7, item)
    assert fileformat._contact(7, item) == fileformat._checked_contact(7, item)


def test_contacts_spelt_like_the_first_read_the_same_after_it() -> None:
    first = {"msisdn": "0831234567", "customerId": "C1", "values": {"value1": "a", "value2": "b"}}
    again = {"msisdn": "0831234568", "customerId": "C2", "values": {"value1": "c", "value2": None}}
    assert fileformat._usual_contact(0, first) == RawContact(0, "0831234567", "C1", first["values"], None)  # type: ignore[arg-type]
    assert fileformat._usual_contact(1, again) == fileformat._checked_contact(1, again)
    assert fileformat._usual_contact(1, again).values == {"value1": "c"}  # type: ignore[union-attr]


def test_a_plain_contact_takes_the_usual_path() -> None:
    item = {"msisdn": "0831234567", "customerId": "C1", "values": {"value1": "a", "other": "b"}}
    assert fileformat._usual_contact(3, item) == RawContact(3, "0831234567", "C1", {"value1": "a"}, None)


# ---- limits (PRODUCT.md §7): each checked before the parser sees the bytes -------------------

ISSUE_DEPTH_BOMB = b'{"version":7,"message_template":"x","contacts":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
ISSUE_LONG_INT = b'{"Version":7,"Message_Template":"x","Contacts":[{"msisdn":1' + b"0" * 4300 + b"}]}"


def limit_error(path: Path, limits: Limits | None = None) -> FileRejected:
    """The rejection of reading the file whole (header, then every contact)."""
    with pytest.raises(FileRejected) as caught:
        header = read_header(path, limits or Limits())
        for _ in iter_contacts(path, header):
            pass
    return caught.value


def fast_and_flat(path: Path, limits: Limits | None = None) -> FileRejected:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        error = limit_error(path, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 20 * 1024 * 1024
    return error


def test_the_depth_bomb_of_the_issue_fails_fast_naming_the_limit(tmp_path: Path) -> None:
    error = fast_and_flat(write(tmp_path, ISSUE_DEPTH_BOMB))
    assert error.code == ErrorCode.CORRUPT and "max_json_depth" in error.detail


def test_a_depth_bomb_in_a_header_value_fails_the_same_way(tmp_path: Path) -> None:
    body = b'{"Version": 7, "Foo": ' + b"[" * 30_000 + b"]" * 30_000 + b', "Contacts": [{"msisdn": "1"}]}'
    assert "max_json_depth" in fast_and_flat(write(tmp_path, body)).detail


def test_a_depth_bomb_after_the_contacts_fails_the_same_way(tmp_path: Path) -> None:
    body = b'{"Version": 7, "Contacts": [{"msisdn": "1"}], "Foo": ' + b"{\"a\":" * 30_000 + b"1" + b"}" * 30_000 + b"}"
    assert "max_json_depth" in fast_and_flat(write(tmp_path, body)).detail


@pytest.mark.parametrize("depth", [32, 33])
def test_depth_is_counted_exactly(tmp_path: Path, depth: int) -> None:
    # The file's object is level 1, its contacts array 2, a contact 3: nest an unknown key below.
    nested = "[" * (depth - 3) + "]" * (depth - 3)
    path = write(tmp_path, '{"Version": 7, "Message_Template": "Hi", "Contacts": [{"msisdn": "1", "x": ' + nested + "}]}")
    if depth <= 32:
        assert len(read(path)[1]) == 1
    else:
        assert "max_json_depth" in limit_error(path).detail


def test_depth_is_exact_across_chunks_and_strings_holding_brackets(tmp_path: Path) -> None:
    contact = '{"msisdn": "1", "message": "[[[{{{ \\" ]]", "x": ' + "[" * 29 + "]" * 29 + "}"
    path = write(tmp_path, '{"Version": 7, "Contacts": [' + ",".join([contact] * 8_000) + "]}")
    assert len(read(path)[1]) == 8_000  # depth 32 exactly, in every chunk
    assert "max_json_depth" in limit_error(path, Limits(max_json_depth=31)).detail


def test_the_long_integer_of_the_issue_is_refused_without_crashing_the_parser(tmp_path: Path) -> None:
    error = fast_and_flat(write(tmp_path, ISSUE_LONG_INT))
    assert error.code == ErrorCode.CORRUPT and "max_number_chars" in error.detail


@pytest.mark.parametrize("where", ["header", "contact", "after"])
def test_a_number_over_the_limit_is_refused_wherever_it_is(tmp_path: Path, where: str) -> None:
    number = "9" * 65
    bodies = {
        "header": f'{{"Version": 7, "Foo": {number}, "Contacts": [{{"msisdn": "1"}}]}}',
        "contact": f'{{"Version": 7, "Contacts": [{{"msisdn": "1", "values": {{"value1": -{number}}}}}]}}',
        "after": f'{{"Version": 7, "Contacts": [{{"msisdn": "1"}}], "Foo": 1.{number}}}',
    }
    assert "max_number_chars" in limit_error(write(tmp_path, bodies[where])).detail


def test_a_number_at_the_limit_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Version": 7, "Contacts": [{"msisdn": ' + "2" * 64 + "}]}")
    assert read(path)[1][0].msisdn == "2" * 64


def test_a_number_split_across_chunks_is_measured_whole(tmp_path: Path) -> None:
    pad = " " * (fileformat.SCAN_CHUNK_BYTES - 40)
    body = '{"Version": 7, "Contacts": [{"msisdn": "1"},' + pad + '{"msisdn": ' + "7" * 65 + "}]}"
    assert "max_number_chars" in limit_error(write(tmp_path, body)).detail


def test_deep_indentation_is_not_a_long_number(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Version": 7,' + " " * 5000 + '"Contacts": [{"msisdn":' + "\n" * 5000 + '"1"}]}')
    assert len(read(path)[1]) == 1


def test_a_huge_exponent_is_a_contact_error_not_a_billion_digits(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": 1e999999999}]}')
    started = time.perf_counter()
    contacts = read(path)[1]
    assert time.perf_counter() - started < 1.0
    assert contacts[0].problem is not None and "digits" in contacts[0].problem


@pytest.mark.parametrize("field", ["Message_Template", "value1", "key"])
def test_a_50_mb_string_fails_fast_naming_the_limit(tmp_path: Path, field: str) -> None:
    big = "x" * 50_000_000
    body = {
        "Message_Template": '{"Version": 7, "Message_Template": "' + big + '", "Contacts": [{"msisdn": "1"}]}',
        "value1": '{"Version": 7, "Contacts": [{"msisdn": "1", "values": {"value1": "' + big + '"}}]}',
        "key": '{"Version": 7, "Contacts": [{"msisdn": "1", "' + big + '": 1}]}',
    }[field]
    path = write(tmp_path, body)
    del big, body
    error = fast_and_flat(path)
    assert error.code == ErrorCode.CORRUPT and "max_string_bytes" in error.detail


def test_a_string_of_escapes_is_measured_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, '{"Version": 7, "Message_Template": "' + "\\n" * 40_000 + '", "Contacts": [{"msisdn": "1"}]}')
    assert "max_string_bytes" in limit_error(path).detail
    assert read_header(path, Limits(max_string_bytes=80_000)).message_template == "\n" * 40_000


def test_a_contact_over_its_size_limit_fails_the_file(tmp_path: Path) -> None:
    items = ",".join(f'{{"a": "{n}"}}' for n in range(200_000))
    path = write(tmp_path, '{"Version": 7, "Contacts": [{"msisdn": "1", "x": [' + items + "]}]}")
    assert "max_contact_bytes" in fast_and_flat(path).detail


def test_many_contacts_of_a_usual_size_are_not_one_big_contact(tmp_path: Path) -> None:
    path = write(tmp_path, minimal() | {"Contacts": [{"msisdn": "1", "values": {"value1": "x" * 100}}] * 30_000})
    assert len(read(path)[1]) == 30_000


def test_keys_per_object_are_limited_in_the_header_a_contact_and_its_values(tmp_path: Path) -> None:
    many = {f"k{n}": 1 for n in range(300)}
    assert "max_keys_per_object" in limit_error(write(tmp_path, minimal(**many))).detail
    assert "max_keys_per_object" in limit_error(write(tmp_path, minimal() | {"Contacts": [{"msisdn": "1", **many}]})).detail
    values = minimal() | {"Contacts": [{"msisdn": "1", "values": many}]}
    assert "max_keys_per_object" in limit_error(write(tmp_path, values)).detail
    assert len(read(write(tmp_path, minimal() | {"Contacts": [{"msisdn": "1", **dict(list(many.items())[:255])}]}))[1]) == 1


def test_contacts_over_the_limit_are_a_parse_error_at_the_first_one_too_many(tmp_path: Path) -> None:
    path = write(tmp_path, minimal() | {"Contacts": [{"msisdn": "1"}] * 11})
    error = limit_error(path, Limits(max_contacts=10))
    assert error.code == ErrorCode.PARSE_ERROR and "max_contacts" in error.detail
    header = read_header(path, Limits(max_contacts=11))
    assert len(list(iter_contacts(path, header))) == 11
    assert len(list(iter_contacts(path, read_header(path, Limits(max_contacts=10)), stop=10))) == 10


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, minimal())
    error = limit_error(path, Limits(max_file_bytes=path.stat().st_size - 1))
    assert error.code == ErrorCode.CORRUPT and "max_file_bytes" in error.detail
    assert read_header(path, Limits(max_file_bytes=path.stat().st_size)).version == 7
