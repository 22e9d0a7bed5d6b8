"""Message templates: `@@value1@@`..`@@value6@@` replaced by a contact's values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

PLACEHOLDER = re.compile(r"@@([A-Za-z0-9_]+)@@")
ALLOWED = frozenset(f"value{n}" for n in range(1, 7))


class TemplateInvalid(ValueError):
    """The template names a placeholder other than value1..value6."""


@dataclass(frozen=True)
class Template:
    """A template split once into literal text around its placeholders, so that rendering (once
    per contact) is a join: literals[0] + value(placeholders[0]) + literals[1] + ... ."""

    literals: tuple[str, ...]  # always one more than placeholders
    placeholders: tuple[str, ...]  # lowercase names, in order, repeats kept

    @classmethod
    def parse(cls, text: str) -> Template:
        """Raises TemplateInvalid naming the first placeholder that is not value1..value6.
        `@@` that does not close a name (an address like `a@@b`, a lone `@@`) is literal text."""
        pieces = PLACEHOLDER.split(text)
        names = tuple(name.lower() for name in pieces[1::2])
        for name, written in zip(names, pieces[1::2], strict=True):
            if name not in ALLOWED:
                raise TemplateInvalid(
                    f"unknown placeholder @@{written}@@ (only @@value1@@ to @@value6@@)"
                )
        return cls(tuple(pieces[0::2]), names)

    def render(self, values: Mapping[str, str]) -> str:
        """The text for one contact; `values` has lowercase keys and a missing one renders empty."""
        literals = self.literals
        if not self.placeholders:
            return literals[0]
        get = values.get
        out = [literals[0]]
        for name, literal in zip(self.placeholders, literals[1:], strict=True):
            out.append(get(name, ""))
            out.append(literal)
        return "".join(out)
