"""The auditor's commands after a mixed workload through the real service (SFTP uploads, the
simulator's receipts and STOP replies, an expiry with its refund, failed files, opt-out changes, a
credit transfer): `readmodels rebuild --verify` finds live and fresh read models equal (and finds
a tampered one), `audit export` is byte-identical twice and `audit verify` catches a changed part,
`replay --all` says yes/no/missing per file, and `history` answers from the same log."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventstore.history import History, HistoryQuery
from tests.service import Service, running_service
from tests.test_e2e import send, upload, v7

NUMBERS = [f"2783123{i:04d}" for i in range(12)]
GATEWAYS = """
[gateways.simulator]
delay = 0.05
failed_per_mille = 250
expired_per_mille = 150
reply_per_mille = 400
reply_text = "STOP"
"""


def _settled(service: Service, account: str, expected: int) -> list[dict[str, Any]]:
    """Wait until `expected` messages of the account have their final status."""
    store = service.store()
    history = History(service.settings.history_db)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            history.catch_up(store)
            messages = list(history.iter_messages(HistoryQuery(account=account)))
            final = [m for m in messages if m["status"] in ("delivered", "failed", "expired")]
            if len(messages) == expected and len(final) == expected:
                return messages
            time.sleep(0.25)
        raise AssertionError(f"{account}: {len(messages)} messages, {len(final)} final, {expected} expected")
    finally:
        history.close()
        store.close()


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("audit") / "data"
    data.mkdir(parents=True)
    (data / "gateways.toml").write_text(GATEWAYS)
    with running_service(data) as service:
        service.add_account("acme", credits=100)
        service.add_account("poor", credits=2)
        for command in (
            ["account", "create", "acmesub", "--password", "secret-pw", "--parent", "acme", "--created-at", "2023-01-01"],
            ["credits", "transfer", "acme", "acmesub", "40"],
            ["optout", "add", "acme", "0831230011", "0831230010"],
            ["optout", "remove", "acme", "0831230010"],
            ["account", "rate", "acmesub", "0.02"],
        ):
            result = service.cli(*command)
            assert result.returncode == 0, result.stderr
        # Expiry: a slow account whose End comes while most of its messages wait (minutes only).
        end = (datetime.now(UTC) + timedelta(seconds=20)).replace(second=0, microsecond=0) + timedelta(minutes=1)
        upload(
            service, "acmesub", "slow.json",
            json.dumps(v7(End=end.strftime("%Y-%m-%d %H:%M"), Message_Template="Slow @@value1@@",
                          Contacts=[{"msisdn": n, "values": {"value1": str(i)}} for i, n in enumerate(NUMBERS[:6])])),
        )
        folder, _ = send(
            service, "acme", "ok.json",
            v7(Message_Template="Hi @@value1@@", Contacts=[
                {"msisdn": n, "customerId": f"C{i}", "values": {"value1": f"n{i}"}} for i, n in enumerate(NUMBERS)
            ]),
        )
        assert folder == "Processed"
        assert send(service, "acme", "broken.json", "{not json")[0] == "Errors"
        assert send(service, "poor", "big.json", v7(Message_Template="x", Contacts=[{"msisdn": n} for n in NUMBERS]))[
            0
        ] == "Errors"
        assert service.wait_report("acmesub", "slow.json")[0] == "Processed"
        _settled(service, "acme", 11)  # 12 contacts, one opted out
        slow = _settled(service, "acmesub", 6)
        assert any(m["status"] == "expired" and m["refunded"] for m in slow), slow
        yield service


def test_the_workload_has_every_kind_of_fact(workload: Service) -> None:
    result = workload.cli("history", "--account", "acme", "--json")
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    statuses = {m["status"] for m in messages}
    assert {"delivered", "failed"} <= statuses, statuses
    replies = [r for m in messages for r in m["replies"]]
    assert replies and all(r["opt_out"] for r in replies)
    assert all(m["submitted_at"] and m["gateway"] == "simulator" and m["gateway_id"] for m in messages)


def test_history_of_a_number_given_in_national_form(workload: Service) -> None:
    result = workload.cli("history", "--msisdn", "083 123 0001", "--format", "csv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("message_id,account,file,")
    accounts = sorted(line.split(",")[1] for line in lines[1:])
    assert accounts == ["acme", "acmesub"]


def test_rebuild_verify_finds_live_and_fresh_equal(workload: Service) -> None:
    result = workload.cli("readmodels", "rebuild", "--verify", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["equal"] is True
    for name in ("readmodels", "history"):
        database = report["databases"][name]
        assert database["live"] == database["fresh"]
        assert all(table["equal"] for table in database["tables"].values())
    tables = report["databases"]["history"]["tables"]
    assert tables["messages"]["rows"] == 17 and tables["replies"]["rows"] > 0
    text = workload.cli("readmodels", "rebuild", "--verify")
    assert text.returncode == 0
    assert "overall" in text.stdout and "live and fresh are equal" in text.stdout


def test_rebuild_verify_finds_a_tampered_read_model_and_rebuild_repairs_it(workload: Service) -> None:
    with sqlite3.connect(workload.settings.history_db) as db:
        db.execute("UPDATE messages SET text = 'changed' WHERE id = (SELECT min(id) FROM messages)")
    result = workload.cli("readmodels", "rebuild", "--verify")
    assert result.returncode == 1
    assert "DIFFERENT" in result.stdout and "DIFFER" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "DIFFERENT" in line)
    assert line.split()[0] == "messages"
    assert workload.cli("readmodels", "rebuild").returncode == 0
    assert workload.cli("readmodels", "rebuild", "--verify").returncode == 0


def month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def bundle_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_audit_export_twice_gives_byte_identical_bundles(workload: Service, tmp_path: Path) -> None:
    # (a workload that crosses midnight of a month's last day could split; it does not here)
    for out in ("first", "second"):
        result = workload.cli("audit", "export", "acme", "--month", month(), "--out", str(tmp_path / out))
        assert result.returncode == 0, result.stderr
    first, second = bundle_bytes(tmp_path / "first"), bundle_bytes(tmp_path / "second")
    assert first == second
    parts = ("messages", "submissions", "receipts", "replies", "credits", "optouts")
    assert sorted(first) == sorted(["manifest.json", *(f"{p}.{k}" for p in parts for k in ("jsonl", "csv"))])
    manifest = json.loads(first["manifest.json"])
    counts = {name: part["count"] for name, part in manifest["parts"].items()}
    assert counts["messages"] == counts["submissions"] == counts["receipts"] == 11
    assert counts["replies"] > 0
    assert counts["optouts"] >= 3  # two added and one removed by the CLI, and the STOP replies
    ledger = [json.loads(line) for line in first["credits.jsonl"].splitlines()]
    assert [row["entry"] for row in ledger][:2] == ["added", "transferred_out"]
    assert ledger[-1]["balance"] == 100 - 40 - 11
    assert manifest["positions"]["first"] <= manifest["positions"]["last"]
    import hashlib

    for name, part in manifest["parts"].items():
        for file_name, entry in part["files"].items():
            assert hashlib.sha256(first[file_name]).hexdigest() == entry["sha256"], (name, file_name)


def test_audit_verify_matches_and_catches_a_changed_part(workload: Service, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert workload.cli("audit", "export", "acmesub", "--month", month(), "--out", str(bundle)).returncode == 0
    result = workload.cli("audit", "verify", str(bundle), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(part["match"] for part in json.loads(result.stdout)["parts"].values())
    receipts = bundle / "receipts.csv"
    receipts.write_text(receipts.read_text().replace("expired", "delivered", 1))
    result = workload.cli("audit", "verify", str(bundle))
    assert result.returncode == 1
    verdicts = {
        line.split()[0]: line.split()[1]
        for line in result.stdout.splitlines()
        if line.startswith("  ") and not line.startswith("    ")
    }
    assert verdicts == {
        "credits": "match", "messages": "match", "optouts": "match", "receipts": "MISMATCH", "replies": "match",
        "submissions": "match",
    }
    assert "receipts.csv" in result.stdout and "does NOT match" in result.stdout


def test_audit_commands_refuse_bad_input_without_traceback(workload: Service, tmp_path: Path) -> None:
    for argv, message in (
        (["audit", "export", "acme", "--month", "2026-13", "--out", str(tmp_path / "x")], "not a month"),
        (["audit", "export", "nobody", "--month", "2026-11", "--out", str(tmp_path / "y")], "no account"),
        (["audit", "verify", str(tmp_path)], "no manifest.json"),
    ):
        result = workload.cli(*argv)
        assert result.returncode == 2, argv
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_replay_all_reports_each_file_yes_no_or_missing(workload: Service, tmp_path: Path) -> None:
    result = workload.cli("replay", "--all", "--account", "acme", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    verdicts = {row["file"]: row["filed_report"] for row in json.loads(result.stdout)["files"]}
    assert verdicts == {"ok.json": "yes", "broken.json": "yes"}
    processed = workload.folder("acme", "Processed") / "ok.json.report.json"
    failed = workload.folder("acme", "Errors") / "broken.json.report.json"
    saved = tmp_path / "saved.json"
    shutil.copy(processed, saved)
    processed.write_text(processed.read_text().replace('"contacts": 12', '"contacts": 13'))
    failed_text = failed.read_text()
    failed.unlink()
    try:
        result = workload.cli("replay", "--all", "--account", "acme")
        assert result.returncode == 1
        assert "1 differ, 1 missing" in result.stdout
        rows = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines()[1:3]}
        assert rows == {"broken.json": "missing", "ok.json": "no"}
    finally:
        shutil.copy(saved, processed)
        failed.write_text(failed_text)
    assert workload.cli("replay", "--all", "--account", "acme").returncode == 0
    unknown = workload.cli("replay", "--all", "--account", "nobody")
    assert unknown.returncode == 2 and "no account" in unknown.stderr


def test_verify_catches_a_changed_manifest_and_a_missing_part(tmp_path: Path) -> None:
    from eventstore.audit import export_bundle, verify_bundle
    from eventstore.store import open_store
    from tests.test_history import report, send_file, submit

    now = datetime.now(UTC)  # events are in the month of their timestamp: the receipt's is now
    store = open_store(tmp_path / "data")
    try:
        store.create_account(username="acme", password_hash="x", email=None, country="ZA", created_at=now)
        store.add_credits("acme", 10)
        file = send_file(store, "a.json", [("27831110000", "C1"), ("27831110001", None)], at=now)
        submit(store, file, [0, 1], now)
        report(store, file, 0, "delivered", now)
        bundle = tmp_path / "bundle"
        manifest = export_bundle(store, "acme", month(), bundle)
        assert manifest["parts"]["messages"]["count"] == 2 and manifest["parts"]["receipts"]["count"] == 1
        assert all(result["match"] for result in verify_bundle(store, bundle).values())
        assert export_bundle(store, "acme", "2020-01", tmp_path / "old")["positions"] == {"first": None, "last": None}
        text = (bundle / "manifest.json").read_text()
        changed = json.loads(text)
        changed["positions"]["last"] += 1
        changed["parts"]["submissions"]["count"] = 1
        (bundle / "manifest.json").write_text(json.dumps(changed))
        (bundle / "replies.jsonl").unlink()
        results = verify_bundle(store, bundle)
        assert {name for name, result in results.items() if not result["match"]} == {"positions", "submissions", "replies"}
        assert results["replies"]["problems"] == ["replies.jsonl: missing"]
    finally:
        store.close()
