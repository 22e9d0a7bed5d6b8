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
    assert Template.parse("@@Value3@@").render({"value3": "x"}) == "x"


def test_all_six_values_are_allowed() -> None:
    text = " ".join(f"@@value{n}@@" for n in range(1, 7))
    assert Template.parse(text).render({f"value{n}": str(n) for n in range(1, 7)}) == "1 2 3 4 5 6"


@pytest.mark.parametrize("text", ["Hi @@name@@", "@@value7@@", "@@value0@@"])
def test_other_placeholders_make_the_template_invalid(text: str) -> None:
    with pytest.raises(TemplateInvalid):
        Template.parse(text)


def test_lone_at_signs_are_literal() -> None:
    assert Template.parse("mail a@@b or @@ alone").render({}) == "mail a@@b or @@ alone"
