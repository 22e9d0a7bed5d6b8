"""The version-7 reader: header fields, key spellings, contacts as a stream, and every way a file fails."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from sftpsms import fileformat
from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.fileformat import Header, RawContact, iter_contacts, read_header


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
