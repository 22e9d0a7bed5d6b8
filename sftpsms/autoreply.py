"""HELP and STOP answers: which inbound reply an account answers, and with what.

An account may set a HELP text (sent when a reply's first word is one of its HELP keywords,
default HELP and INFO) and a STOP confirmation (sent when a reply opts the number out, by the
service's opt-out keywords). Each answer is one real SMS, charged like any message. CTIA's
rules for the confirmation: it names the brand, says no further messages will be sent, and
tells how to get help ("Reply HELP for help"). A STOP keyword wins over a HELP keyword; a number
that was already opted out gets no answer at all (the confirmation was its last message).
"""

from __future__ import annotations

from dataclasses import dataclass

from sftpsms.gatewayids import is_opt_out
from sftpsms.gsm import NotGsmText, message_parts

DEFAULT_HELP_KEYWORDS = ("HELP", "INFO")
HELP, STOP = "help", "stop"
MAX_KEYWORD_CHARS = 20
MAX_ANSWER_PARTS = 3  # an answer is short; and each one costs credits


class AutoReplyInvalid(ValueError):
    """A HELP/STOP setting that cannot be used (empty text, bad keyword, ...)."""


@dataclass(frozen=True)
class AutoReplies:
    """An account's HELP/STOP settings; a text of None means that answer is off."""

    help_text: str | None = None
    stop_text: str | None = None
    help_keywords: tuple[str, ...] = DEFAULT_HELP_KEYWORDS

    @property
    def enabled(self) -> bool:
        return self.help_text is not None or self.stop_text is not None


def parse_keywords(text: str) -> tuple[str, ...]:
    """`HELP,INFO` → ("HELP", "INFO"): upper case, one word each, no repeats, order kept."""
    words: list[str] = []
    for raw in text.split(","):
        word = raw.strip().upper()
        if not word:
            continue
        if not word.isalnum() or len(word) > MAX_KEYWORD_CHARS:
            raise AutoReplyInvalid(f"a keyword is one word of up to {MAX_KEYWORD_CHARS} letters or digits, not {raw.strip()!r}")
        if word not in words:
            words.append(word)
    if not words:
        raise AutoReplyInvalid("give at least one HELP keyword")
    return tuple(words)


def check_keywords(keywords: tuple[str, ...], optout_words: tuple[str, ...]) -> None:
    """HELP keywords must not be opt-out keywords (those always opt out)."""
    clash = sorted(set(keywords) & {word.upper() for word in optout_words})
    if clash:
        raise AutoReplyInvalid(f"{', '.join(clash)} opts a number out; it cannot be a HELP keyword")


def is_help(text: str, keywords: tuple[str, ...]) -> bool:
    """A reply whose first word is one of the HELP keywords (case-insensitive): "help", "Info?"."""
    words = text.strip().split()
    return bool(words) and words[0].strip(".!?").upper() in keywords


def answer_for(
    text: str, settings: AutoReplies, *, optout_words: tuple[str, ...], already_opted_out: bool
) -> tuple[str, str] | None:
    """(kind, text) of the answer to an inbound reply, or None: nothing to send."""
    if already_opted_out:
        return None
    if is_opt_out(text, optout_words):
        return (STOP, settings.stop_text) if settings.stop_text is not None else None
    if settings.help_text is not None and is_help(text, settings.help_keywords):
        return HELP, settings.help_text
    return None


def confirmation_warnings(stop_text: str) -> list[str]:
    """What a STOP confirmation lacks of CTIA's recommendation (not enforced: the brand and the
    wording are the account's)."""
    warnings = []
    if "help" not in stop_text.lower():
        warnings.append('the STOP confirmation should tell how to get help, e.g. "Reply HELP for help"')
    return warnings


def auto_reply_parts(text: str, *, unicode: bool) -> tuple[int, str | None]:
    """The parts (credits) of an answer, or 0 and why it cannot be sent (a non-GSM text of an
    account that has turned UCS-2 off since it set it)."""
    try:
        return message_parts(text, unicode=unicode)[1], None
    except NotGsmText as error:
        return 0, str(error)


def check_answer_text(text: str, what: str, *, unicode: bool) -> str:
    """A HELP or STOP text as set by the account: not empty, sendable, at most MAX_ANSWER_PARTS."""
    if not text.strip():
        raise AutoReplyInvalid(f"the {what} text is empty")
    parts, reason = auto_reply_parts(text, unicode=unicode)
    if reason is not None:
        raise AutoReplyInvalid(f"the {what} text cannot be sent: {reason}")
    if parts > MAX_ANSWER_PARTS:
        raise AutoReplyInvalid(f"the {what} text needs {parts} SMS parts, more than {MAX_ANSWER_PARTS}")
    return text
