"""Audit bundles: one account's month, derived from the event log alone, as JSON Lines and CSV per
part with a manifest of SHA-256 digests, counts and the log positions covered.

The same derivation writes a bundle (`export_bundle`) and checks one (`verify_bundle`): a bundle
is a pure function of the events, so the same month exported twice is byte-identical, and any
change to a part, or to the events, shows as a mismatch. A row belongs to the month of its event's
timestamp (UTC), so a closed month never changes: a receipt that arrives later is in the month it
arrived. The log is read once, page by page, keeping only the account's own file, batch and log
ids (a few thousand per million messages): memory stays flat on any log.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.utils import get_topic

from eventstore.domain import (
    Account,
    ContactBatch,
    DeliveryLog,
    DispatchLog,
    File,
    account_id,
    message_id_text,
)
from eventstore.history import notification_fields, originator_hex
from eventstore.store import SmsStore

FORMAT = "sftpsms-audit/1"
MANIFEST = "manifest.json"
PAGE = 5000
MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")

COLUMNS: dict[str, tuple[str, ...]] = {
    "messages": (
        "position", "message_id", "file_id", "file", "index", "msisdn", "customer_id", "sender_id", "text", "parts",
        "queued_at",
    ),
    "submissions": ("position", "message_id", "file_id", "index", "msisdn", "gateway", "gateway_id", "parts", "submitted_at"),
    "receipts": ("position", "message_id", "file_id", "index", "msisdn", "status", "error", "gateway", "gateway_id", "refunded", "at"),
    "replies": ("position", "message_id", "file_id", "index", "msisdn", "text", "opt_out", "gateway", "reply_id", "at"),
    "credits": ("position", "at", "entry", "amount", "balance", "file_id", "counterparty", "reason"),
    "optouts": ("position", "at", "change", "msisdn"),
}
PARTS = tuple(COLUMNS)

_T = {cls: get_topic(cls) for cls in (
    File.FileReceived, ContactBatch.BatchOpened, ContactBatch.MessageQueued, DispatchLog.DispatchStarted,
    DispatchLog.MessageSubmitted, DispatchLog.MessageExpired, DeliveryLog.DeliveryStarted,
    DeliveryLog.DeliveryReported, DeliveryLog.ReplyReceived, Account.CreditsAdded, Account.CreditsReserved,
    Account.CreditsRefunded, Account.CreditsTransferredOut, Account.CreditsTransferredIn, Account.OptOutsAdded,
    Account.OptOutsRemoved,
)}
TOPICS = tuple(_T.values())
LEDGER = {
    _T[Account.CreditsAdded]: ("added", +1),
    _T[Account.CreditsReserved]: ("reserved", -1),
    _T[Account.CreditsRefunded]: ("refunded", +1),
    _T[Account.CreditsTransferredOut]: ("transferred_out", -1),
    _T[Account.CreditsTransferredIn]: ("transferred_in", +1),
}


class AuditError(Exception):
    """A bundle that cannot be made or read: a bad month, a missing or unreadable manifest."""


def check_month(month: str) -> str:
    if not MONTH.fullmatch(month):
        raise AuditError(f"{month!r} is not a month: give YYYY-MM, e.g. 2026-11")
    return month


def audit_rows(
    store: SmsStore, account: str, month: str, progress: Callable[[int, int], None] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(part, row) for every fact of `account` whose event is in `month`, in log order."""
    check_month(month)
    until = store.last_position()
    own = account_id(account).hex
    files: dict[str, str] = {}  # file id → name
    batches: dict[str, tuple[str, str]] = {}  # batch hex → (file id, sender id)
    logs: dict[str, str] = {}  # dispatch log hex → file id
    deliveries: set[str] = set()
    balance = 0
    plain = store.writes_batch_rows
    state = partial(notification_fields, store, plain=plain)

    position = 0
    while position < until:
        page = store.notifications(position, PAGE, TOPICS, stop=until)
        if not page:
            break
        for n in page:
            topic, where = n.topic, originator_hex(n)
            if topic == _T[ContactBatch.MessageQueued]:
                if where not in batches:
                    continue
                e = state(n)
                if not e["timestamp"].startswith(month):
                    continue
                file, sender = batches[where]
                yield "messages", {
                    "position": n.id, "message_id": message_id_text(UUID(file), e["index"]), "file_id": file,
                    "file": files.get(file), "index": e["index"], "msisdn": e["msisdn"],
                    "customer_id": e["customer_id"], "sender_id": sender, "text": e["text"], "parts": e["parts"],
                    "queued_at": e["timestamp"],
                }
            elif topic == _T[DispatchLog.MessageSubmitted] or topic == _T[DispatchLog.MessageExpired]:
                if where not in logs:
                    continue
                e = state(n)
                if not e["timestamp"].startswith(month):
                    continue
                file = logs[where]
                common = {"position": n.id, "message_id": message_id_text(UUID(file), e["index"]), "file_id": file,
                          "index": e["index"]}
                if topic == _T[DispatchLog.MessageSubmitted]:
                    yield "submissions", {
                        **common, "msisdn": e["msisdn"], "gateway": e["gateway"], "gateway_id": e["gateway_id"],
                        "parts": e["parts"], "submitted_at": e["submitted_at"],
                    }
                else:
                    yield "receipts", {
                        **common, "msisdn": None, "status": "expired",
                        "error": "unsent when its file was cancelled" if e.get("reason") == "cancelled" else "unsent at End",
                        "gateway": None,
                        "gateway_id": None, "refunded": e["parts"], "at": e["at"],
                    }
            elif topic == _T[DeliveryLog.DeliveryReported] or topic == _T[DeliveryLog.ReplyReceived]:
                if where not in deliveries:
                    continue
                e = state(n)
                if not e["timestamp"].startswith(month):
                    continue
                common = {"position": n.id, "message_id": e["message_id"], "file_id": e["file_id"],
                          "index": e["index"], "msisdn": e["msisdn"]}
                if topic == _T[DeliveryLog.DeliveryReported]:
                    yield "receipts", {
                        **common, "status": e["status"], "error": e["error"], "gateway": e["gateway"],
                        "gateway_id": e["gateway_id"], "refunded": 0, "at": e["at"],
                    }
                else:
                    yield "replies", {
                        **common, "text": e["text"], "opt_out": e["opt_out"], "gateway": e["gateway"],
                        "reply_id": e["reply_id"], "at": e["at"],
                    }
            elif where == own:
                e = state(n)
                in_month = e["timestamp"].startswith(month)
                if topic in LEDGER:
                    entry, sign = LEDGER[topic]
                    balance += sign * e["amount"]
                    if in_month:
                        yield "credits", {
                            "position": n.id, "at": e["timestamp"], "entry": entry, "amount": sign * e["amount"],
                            "balance": balance, "file_id": e.get("file_id"),
                            "counterparty": e.get("to_account") or e.get("from_account"), "reason": e.get("reason"),
                        }
                elif in_month:
                    change = "added" if topic == _T[Account.OptOutsAdded] else "removed"
                    for msisdn in e["msisdns"]:
                        yield "optouts", {"position": n.id, "at": e["timestamp"], "change": change, "msisdn": msisdn}
            elif topic == _T[File.FileReceived]:
                e = state(n)
                if e["account"] == account:
                    files[str(UUID(where))] = e["name"]
            elif topic == _T[ContactBatch.BatchOpened]:
                e = state(n)
                if e["account"] == account:
                    batches[where] = (e["file_id"], e["sender_id"])
            elif topic == _T[DispatchLog.DispatchStarted]:
                e = state(n)
                if e["account"] == account:
                    logs[where] = e["file_id"]
            elif topic == _T[DeliveryLog.DeliveryStarted]:
                e = state(n)
                if e["account"] == account:
                    deliveries.add(where)
        position = page[-1].id
        if progress is not None:
            progress(position, until)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return value


@dataclass
class _Part:
    """One part's two encodings as they are produced: their digests, sizes, and (when writing)
    their files."""

    name: str
    out: Path | None
    count: int = 0
    first: int | None = None
    last: int | None = None
    digests: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    handles: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.buffer = io.StringIO()
        self.csv = csv.writer(self.buffer, lineterminator="\n")
        for kind in ("jsonl", "csv"):
            self.digests[kind] = hashlib.sha256()
            self.sizes[kind] = 0
            if self.out is not None:
                self.handles[kind] = (self.out / f"{self.name}.{kind}").open("wb")
        self.csv.writerow(COLUMNS[self.name])
        self._emit("csv", self._take())

    def _take(self) -> bytes:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text.encode()

    def _emit(self, kind: str, data: bytes) -> None:
        self.digests[kind].update(data)
        self.sizes[kind] += len(data)
        if kind in self.handles:
            self.handles[kind].write(data)

    def add(self, row: dict[str, Any]) -> None:
        self.count += 1
        if self.first is None:
            self.first = row["position"]
        self.last = row["position"]
        self._emit("jsonl", orjson.dumps(row) + b"\n")
        self.csv.writerow([_csv_value(row[c]) for c in COLUMNS[self.name]])
        self._emit("csv", self._take())

    def finish(self) -> dict[str, Any]:
        for handle in self.handles.values():
            handle.close()
        return {
            "count": self.count,
            "first_position": self.first,
            "last_position": self.last,
            "files": {
                f"{self.name}.{kind}": {"sha256": self.digests[kind].hexdigest(), "bytes": self.sizes[kind]}
                for kind in ("jsonl", "csv")
            },
        }


def derive(
    store: SmsStore, account: str, month: str, out: Path | None, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """The manifest of the bundle of `account`'s `month`; with `out`, its part files are written
    there too."""
    parts = {name: _Part(name, out) for name in PARTS}
    try:
        for name, row in audit_rows(store, account, month, progress):
            parts[name].add(row)
    finally:
        summaries = {name: part.finish() for name, part in parts.items()}
    firsts = [s["first_position"] for s in summaries.values() if s["first_position"] is not None]
    lasts = [s["last_position"] for s in summaries.values() if s["last_position"] is not None]
    return {
        "format": FORMAT,
        "account": account,
        "month": month,
        "positions": {"first": min(firsts, default=None), "last": max(lasts, default=None)},
        "parts": summaries,
    }


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export_bundle(
    store: SmsStore, account: str, month: str, out: Path, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    check_month(month)
    out.mkdir(parents=True, exist_ok=True)
    manifest = derive(store, account, month, out, progress)
    (out / MANIFEST).write_bytes(_manifest_bytes(manifest))
    return manifest


def read_manifest(bundle: Path) -> dict[str, Any]:
    try:
        manifest = orjson.loads((bundle / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise AuditError(f"{bundle} has no {MANIFEST}: not an audit bundle") from None
    except (OSError, orjson.JSONDecodeError) as error:
        raise AuditError(f"{bundle / MANIFEST} cannot be read: {error}") from None
    if not (isinstance(manifest, dict) and manifest.get("format") == FORMAT and isinstance(manifest.get("parts"), dict)):
        raise AuditError(f"{bundle / MANIFEST} is not a {FORMAT} manifest")
    if not isinstance(manifest.get("account"), str) or not isinstance(manifest.get("month"), str):
        raise AuditError(f"{bundle / MANIFEST} names no account and month")
    check_month(manifest["month"])
    return manifest


def _file_digest(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except (FileNotFoundError, IsADirectoryError):
        return None
    return digest.hexdigest()


def verify_bundle(
    store: SmsStore, bundle: Path, progress: Callable[[int, int], None] | None = None
) -> dict[str, dict[str, Any]]:
    """Per part: `{"match": bool, "problems": [...]}`, re-derived from the events and compared
    with both the manifest and the files on disk."""
    manifest = read_manifest(bundle)
    derived = derive(store, manifest["account"], manifest["month"], None, progress)
    results: dict[str, dict[str, Any]] = {}
    for name in sorted(set(PARTS) | set(manifest["parts"])):
        problems: list[str] = []
        listed = manifest["parts"].get(name)
        fresh = derived["parts"].get(name)
        if not isinstance(listed, dict) or fresh is None:
            problems.append("not in the manifest" if fresh is not None else "not a part of this format")
        else:
            if listed.get("count") != fresh["count"]:
                problems.append(f"the events give {fresh['count']} rows, the manifest says {listed.get('count')}")
            for key in ("first_position", "last_position"):
                if listed.get(key) != fresh[key]:
                    problems.append(f"the events give {key} {fresh[key]}, the manifest says {listed.get(key)}")
            for file_name, expected in fresh["files"].items():
                recorded = (listed.get("files") or {}).get(file_name) or {}
                on_disk = _file_digest(bundle / file_name)
                if recorded.get("sha256") != expected["sha256"]:
                    problems.append(f"{file_name}: the events give another SHA-256 than the manifest's")
                if on_disk is None:
                    problems.append(f"{file_name}: missing")
                elif on_disk != recorded.get("sha256"):
                    problems.append(f"{file_name}: the file's SHA-256 is not the manifest's (changed after export)")
        results[name] = {"match": not problems, "problems": problems}
    if manifest.get("positions") != derived["positions"]:
        results["positions"] = {
            "match": False,
            "problems": [f"the events cover {derived['positions']}, the manifest says {manifest.get('positions')}"],
        }
    return results
