"""Templates: @@value1@@..@@value6@@, missing values render empty, other names are invalid."""

from __future__ import annotations

import pytest

from sftpsms.template import Template, TemplateInvalid


def test_values_are_substituted() -> None:
    template = Template.parse("Message sent to @@value1@@, Welcome @@value2@@")
    assert template.render({"value1": "John", "value2": "Mr"}) == "Message sent to John, Welcome Mr"


def test_a_missing_value_renders_as_nothing() -> None:
    assert Template.parse("Hi @@value1@@ @@value2@@!").render({"value1": "A"}) == "Hi A !"


def test_placeholder_names_match_case_insensitively() -> None:
    assert Template.parse("@@Value3@@/@@VALUE3@@").render({"value3": "x"}) == "x/x"


def test_all_six_values_are_allowed() -> None:
    text = " ".join(f"@@value{n}@@" for n in range(1, 7))
    assert Template.parse(text).render({f"value{n}": str(n) for n in range(1, 7)}) == "1 2 3 4 5 6"


def test_placeholders_lists_lowercase_names_in_order() -> None:
    assert Template.parse("@@Value2@@ and @@value1@@ and @@VALUE2@@").placeholders == (
        "value2",
        "value1",
        "value2",
    )


def test_a_placeholder_at_each_end_keeps_the_text_between() -> None:
    assert (
        Template.parse("@@value1@@ middle @@value2@@").render({"value1": "<", "value2": ">"})
        == "< middle >"
    )


def test_adjacent_placeholders_render_back_to_back() -> None:
    assert Template.parse("@@value1@@@@value2@@").render({"value1": "a", "value2": "b"}) == "ab"


@pytest.mark.parametrize(
    "text, name",
    [
        ("Hi @@name@@", "@@name@@"),
        ("@@value7@@", "@@value7@@"),
        ("@@value0@@", "@@value0@@"),
        ("ok @@value1@@ @@First_Name@@", "@@First_Name@@"),
    ],
)
def test_other_placeholders_make_the_template_invalid_and_are_named(text: str, name: str) -> None:
    with pytest.raises(TemplateInvalid) as caught:
        Template.parse(text)
    assert name in str(caught.value)


def test_template_invalid_is_a_value_error() -> None:
    assert issubclass(TemplateInvalid, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "mail a@@b or @@ alone",
        "@@",
        "@@@@",
        "@@ value1 @@",
        "@@value-1@@",
        "no placeholders at all",
    ],
)
def test_text_that_does_not_close_a_name_is_literal(text: str) -> None:
    template = Template.parse(text)
    assert template.placeholders == ()
    assert template.render({"value1": "X"}) == text


def test_values_other_than_placeholders_are_ignored() -> None:
    assert (
        Template.parse("Hi @@value1@@").render({"value1": "A", "value2": "B", "other": "C"})
        == "Hi A"
    )
