"""An account's four folders and the naming rules of uploads (PRODUCT.md §2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sftpsms.control import CONTROL_SUFFIXES, is_control
from sftpsms.names import BadName, check_file_name

SEND = "Send_SMS"
PROCESSED = "Processed"
ERRORS = "Errors"
VALIDATE = "Validate"  # write like Send_SMS: checked and reported there, never sent
FOLDERS = (SEND, PROCESSED, ERRORS, VALIDATE)
UPLOAD_FOLDERS = (SEND, VALIDATE)  # where clients may write, under the same name rules
ALLOWED_SUFFIXES = (".txt", ".json", ".zip")
TEMPORARY_SUFFIXES = (".part", ".filepart", ".tmp")
REPORT_SUFFIX = ".report.json"
DELIVERY_SUFFIX = ".delivery.csv"
# Every name our outputs take beside a filed file: no upload may be named so (it could replace one).
OUTPUT_SUFFIXES = (REPORT_SUFFIX, DELIVERY_SUFFIX)
# Uploads leave room in the filesystem's 255 bytes for an output suffix and a filing suffix.
MAX_UPLOAD_NAME_BYTES = 200
# Where the SFTP door marks uploads that are open or were cut off (never visible to clients).
INCOMPLETE_DIR = ".incomplete"
INCOMPLETE_VALIDATE_DIR = ".incomplete-validate"  # the same, for uploads into Validate


def is_temporary(name: str) -> bool:
    lowered = name.lower()
    return name.startswith(".") or lowered.endswith(TEMPORARY_SUFFIXES)


def is_allowed(name: str) -> bool:
    """A name that is processed once its upload is complete (a name that `upload_refusal` refuses
    never is, however it got into Send_SMS)."""
    lowered = name.lower()
    return not is_temporary(name) and (lowered.endswith(ALLOWED_SUFFIXES) or is_control(name)) and _storable(name)


def _storable(name: str) -> bool:
    try:
        check_file_name(name)
    except BadName:
        return False
    return len(name.encode("utf-8")) <= MAX_UPLOAD_NAME_BYTES and not is_output_name(name)


def is_output_name(name: str) -> bool:
    """A name of ours (a report, a delivery CSV), also under a temporary suffix."""
    lowered = name.lower()
    for suffix in TEMPORARY_SUFFIXES:
        lowered = lowered.removesuffix(suffix)
    return lowered.endswith(OUTPUT_SUFFIXES)


def upload_refusal(name: str) -> str | None:
    """Why an upload (or a rename) into Send_SMS or Validate cannot have this name, or None when it
    can. The one rule both doors apply at open time (PRODUCT.md §2)."""
    try:
        check_file_name(name)
    except BadName as bad:
        return str(bad)
    size = len(name.encode("utf-8"))
    if size > MAX_UPLOAD_NAME_BYTES:
        return f"a file name can be at most {MAX_UPLOAD_NAME_BYTES} bytes (this one is {size})"
    if is_output_name(name):
        return f"names ending in {' or '.join(OUTPUT_SUFFIXES)} are the service's own: choose another name"
    if not (is_allowed(name) or is_temporary(name)):
        return (
            "only .txt, .json and .zip files may be uploaded (and empty control files "
            f"<name>{'|'.join(CONTROL_SUFFIXES)})"
        )
    return None


def is_zip(name: str) -> bool:
    return name.lower().endswith(".zip")


def account_root(accounts_dir: Path, username: str) -> Path:
    """`accounts_dir/username`, only when that stays inside `accounts_dir`: never for an empty name,
    `.`, `..`, a separator or NUL (an old store may hold such a name; new ones are checked by
    `names.check_account_name`), and never through a link. Raises BadName otherwise."""
    if not username or username in (".", "..") or any(char in username for char in "/\\\0"):
        raise BadName(f"account name {username!r} cannot name a folder")
    root = accounts_dir / username
    if root.is_symlink() or root.resolve().parent != accounts_dir.resolve():
        raise BadName(f"the folder of account {username!r} is not inside the accounts folder")
    return root


def ensure_account_folders(root: Path) -> None:
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)


def incomplete_marker(root: Path, name: str, folder: str = SEND) -> Path:
    """The marker of an upload into `folder` (Send_SMS or Validate) that is open or was cut off."""
    return root / (INCOMPLETE_VALIDATE_DIR if folder == VALIDATE else INCOMPLETE_DIR) / name


def is_incomplete(root: Path, name: str, folder: str = SEND) -> bool:
    return incomplete_marker(root, name, folder).exists()


def move(source: Path, destination: Path) -> None:
    """Rename within the data directory (one filesystem), replacing an older file of that name."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, destination)


def report_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{REPORT_SUFFIX}"


def delivery_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{DELIVERY_SUFFIX}"


def _report_owner(report: Path) -> str | None:
    """The file id a filed report belongs to (None: no report there, or not one of ours)."""
    try:
        owner = json.loads(report.read_bytes()).get("file_id")
    except (OSError, ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None


def filed_name(folder: Path, name: str, file_id: str, *, moving: bool) -> str:
    """The name file `file_id` is filed under in `folder`: its own name, unless an earlier file's
    outputs hold it; then `<stem>.<id>.<suffix>`. No filing ever replaces another file's outputs.

    Stable across re-runs (recovery files a file again): a name whose report is ours is ours.
    `moving` says the file is still to be moved in; a file of that name already there without a
    report is then another file's (else it is ours, moved in before a crash)."""
    for candidate in _filing_names(name, file_id):
        owner = _report_owner(report_path(folder, candidate))
        if owner == file_id:
            return candidate
        taken = owner is not None or report_path(folder, candidate).exists() or delivery_path(folder, candidate).exists()
        if not taken and moving and (folder / candidate).exists():
            taken = True
        if not taken:
            return candidate
    raise FileExistsError(f"no free name in {folder} for {name!r}")


def outputs_name(folder: Path, name: str, file_id: str) -> str:
    """The name under which file `file_id` was filed in `folder` (its own name if no report says)."""
    for candidate in _filing_names(name, file_id):
        if _report_owner(report_path(folder, candidate)) == file_id:
            return candidate
    return name


def _filing_names(name: str, file_id: str) -> tuple[str, ...]:
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        return name, f"{name}.{file_id[:8]}", f"{name}.{file_id}"
    return name, f"{stem}.{file_id[:8]}.{suffix}", f"{stem}.{file_id}.{suffix}"
