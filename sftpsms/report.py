"""The `<name>.report.json` written beside every filed upload (PRODUCT.md §2)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sftpsms.errors import ErrorCode

OPTOUT = ErrorCode.OPTOUT  # listed with the contact errors, but not counted as one


def build_report(
    *,
    file: str,
    account: str,
    status: str,
    error_code: str | None,
    detail: str | None,
    contacts: int,
    messages_queued: int,
    optouts_skipped: int,
    parts: int,
    credits_used: int,
    contact_errors: Iterable[dict[str, Any]],
    received_at: str,
    completed_at: str | None,
    warnings: Iterable[str] = (),
    file_id: str | None = None,
    ucs2_messages: int | None = None,
    ucs2_parts: int | None = None,
) -> dict[str, Any]:
    """The report's fields in order. `ucs2_messages`/`ucs2_parts` (of the messages queued, those
    sent as UCS-2 and their parts) are given for files processed since UCS-2 could be chosen; a
    report rebuilt for an older file leaves them out, as it was filed."""
    errors = sorted(contact_errors, key=lambda error: int(error["index"]))
    if detail is None:
        detail = (
            f"{messages_queued} messages queued ({parts} parts), {optouts_skipped} opted out, "
            f"{sum(1 for error in errors if error.get('code') != OPTOUT)} contact errors"
        )
    report = {
        "file": file,
        "account": account,
        "status": status,
        "error_code": error_code,
        "detail": detail,
        "contacts": contacts,
        "messages_queued": messages_queued,
        "optouts_skipped": optouts_skipped,
        "parts": parts,
        "credits_used": credits_used,
        "contact_errors": errors,
        "warnings": list(warnings),
        "file_id": file_id,
        "received_at": received_at,
        "completed_at": completed_at,
    }
    if ucs2_messages is not None:
        report = _after(report, "credits_used", {"ucs2_messages": ucs2_messages, "ucs2_parts": ucs2_parts or 0})
    return report


def _after(report: dict[str, Any], key: str, extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in report.items():
        out[name] = value
        if name == key:
            out.update(extra)
    return out


def temporary_beside(path: Path) -> Path:
    """A fresh temporary name in `path`'s folder: two writers of one file at once (a cancel's REST
    answer and the dispatcher both refile a report) never share one. Short, so it fits any folder
    a name fits in."""
    return path.with_name(f".{secrets.token_hex(8)}.tmp")


def write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    """Write then rename, so an SFTP client never downloads half a report."""
    temporary = temporary_beside(path)
    with temporary.open("w", encoding="utf-8") as out:
        json.dump(content, out, indent=2, ensure_ascii=False)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
