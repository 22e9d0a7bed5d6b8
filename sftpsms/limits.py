"""Bounds on everything a customer's file controls (PRODUCT.md §7), checked before work is done on it.

Each limit is named in the detail of the rejection it causes by its Settings field (and so by its
SFTPSMS_<NAME> variable), so a customer told "over the limit of 64 levels (max_json_depth)" and
an operator reading the report know which knob it is.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Limits:
    """The limits on one uploaded file. Defaults are safe for a shared service: a file within them
    is parsed in well under 300 MB of memory, whatever its content."""

    max_file_bytes: int = 256 << 20  # an uploaded file (a zip's entries are files too)
    max_json_depth: int = 32  # nesting of objects/arrays; the format itself needs 4
    max_string_bytes: int = 64 << 10  # any string or key, as written in the file
    max_number_chars: int = 64  # any JSON number, as written (an msisdn has at most 15 digits)
    max_keys_per_object: int = 256  # the file's object, a contact, a contact's values
    max_contact_bytes: int = 1 << 20  # one contact (or any value nested under a top-level one)
    max_contacts: int = 2_000_000
    max_zip_entries: int = 100
    max_entry_bytes: int = 256 << 20  # uncompressed, per zip entry (counted, never trusted)
    max_zip_bytes: int = 512 << 20  # uncompressed, all of a zip's entries together
    max_zip_ratio: int = 200  # uncompressed / compressed size of an entry
    max_account_unzip_bytes: int = 1 << 30  # what an account's Processed and Errors may hold before a zip expands there

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        """The limits of a `sftpsms.config.Settings` (whose fields of the same names they are)."""
        return cls(**{spec.name: getattr(settings, spec.name) for spec in fields(cls) if hasattr(settings, spec.name)})


DEFAULT_LIMITS = Limits()

