"""An account's three folders and the naming rules of uploads (PRODUCT.md §2)."""

from __future__ import annotations

import os
from pathlib import Path

SEND = "Send_SMS"
PROCESSED = "Processed"
ERRORS = "Errors"
FOLDERS = (SEND, PROCESSED, ERRORS)
ALLOWED_SUFFIXES = (".txt", ".json", ".zip")
TEMPORARY_SUFFIXES = (".part", ".filepart", ".tmp")
REPORT_SUFFIX = ".report.json"
# Where the SFTP door marks uploads that are open or were cut off (never visible to clients).
INCOMPLETE_DIR = ".incomplete"


def is_temporary(name: str) -> bool:
    lowered = name.lower()
    return name.startswith(".") or lowered.endswith(TEMPORARY_SUFFIXES)


def is_allowed(name: str) -> bool:
    """A name that is processed once its upload is complete."""
    return not is_temporary(name) and name.lower().endswith(ALLOWED_SUFFIXES)


def is_zip(name: str) -> bool:
    return name.lower().endswith(".zip")


def ensure_account_folders(root: Path) -> None:
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)


def incomplete_marker(root: Path, name: str) -> Path:
    return root / INCOMPLETE_DIR / name


def is_incomplete(root: Path, name: str) -> bool:
    return incomplete_marker(root, name).exists()


def move(source: Path, destination: Path) -> None:
    """Rename within the data directory (one filesystem), replacing an older file of that name."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, destination)


def report_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{REPORT_SUFFIX}"
