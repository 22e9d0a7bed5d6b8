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
    # Alternating literal text and placeholder names: literal, name, literal, name, ..., literal.
    pieces: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        pieces = PLACEHOLDER.split(text)
        for name in pieces[1::2]:
            if name.lower() not in ALLOWED:
                raise TemplateInvalid(f"unknown placeholder @@{name}@@ (only @@value1@@ to @@value6@@)")
        return cls(tuple(piece.lower() if i % 2 else piece for i, piece in enumerate(pieces)))

    @property
    def placeholders(self) -> tuple[str, ...]:
        return self.pieces[1::2]

    def render(self, values: Mapping[str, str]) -> str:
        if len(self.pieces) == 1:
            return self.pieces[0]
        return "".join(
            values.get(piece, "") if i % 2 else piece for i, piece in enumerate(self.pieces)
        )
