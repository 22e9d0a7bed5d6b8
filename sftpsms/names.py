"""What account names and uploaded file names may be (PRODUCT.md §1, §2), and how names are quoted
in log lines (a name is the customer's text: a newline in it must not forge a log line)."""

from __future__ import annotations

import re
import unicodedata

ACCOUNT_NAME_MAX = 64
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FILE_NAME_MAX_BYTES = 255  # what the filesystem stores in one path component


class BadName(ValueError):
    """A name that is refused; the message says why, for the user."""


def check_account_name(name: str) -> str:
    """The name, if it is a valid account name: 1-64 letters, digits, `.`, `_`, `-`, starting with a
    letter or digit (ASCII only: one spelling per name). Raises BadName otherwise."""
    if not name:
        raise BadName("an account name cannot be empty")
    if len(name) > ACCOUNT_NAME_MAX:
        raise BadName(f"account name {name!r} is longer than {ACCOUNT_NAME_MAX} characters")
    if _ACCOUNT_NAME.fullmatch(name) is None:
        raise BadName(
            f"account name {name!r} is not allowed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def is_account_name(name: str) -> bool:
    try:
        check_account_name(name)
    except BadName:
        return False
    return True


def name_key(name: str) -> str:
    """The spelling-free form of an account name: names equal here are one name."""
    return name.casefold()


def check_file_name(name: str) -> str:
    """The name, if the filesystem can store it and it is one path component without control
    characters. Raises BadName otherwise (the suffix rules are `folders.is_allowed`'s)."""
    if not name or name in (".", ".."):
        raise BadName("a file name is needed")
    if "/" in name or "\\" in name:
        raise BadName("a file name cannot contain '/' or '\\'")
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in name):
        raise BadName("a file name cannot contain control characters (newline, tab, NUL, ...)")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadName("a file name must be UTF-8") from None
    if size > FILE_NAME_MAX_BYTES:
        raise BadName(f"a file name can be at most {FILE_NAME_MAX_BYTES} bytes (this one is {size})")
    return name


_PLAIN = re.compile(r"[A-Za-z0-9._@+:/-]+")


def quoted(name: object) -> str:
    """A name for a log line (`file=... account=...`) or a message: as it is when plain, else
    Python's repr, so newlines, spaces, quotes and control characters are escaped and visible."""
    text = str(name)
    return text if _PLAIN.fullmatch(text) else repr(text)
