"""Read models follow the log, and a rebuild from the events gives identical content."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from eventstore.projections import ReadModels
from eventstore.store import SmsStore

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def populate(store: SmsStore) -> None:
    store.create_account(username="acme", password_hash="x", email="a@b.c", country="ZA", created_at=NOW)
    store.add_credits("acme", 50)
    store.change_optouts("acme", add=["27831234567", "27831234568"])
    store.change_optouts("acme", add=[], remove=["27831234568"])
    store.add_route("2799")
    receipt = store.receive_file(account="acme", name="a.json", size=1, fingerprint="s", now=NOW)
    store.reject_file(receipt.file_id, "File.Corrupt", "not JSON", parse=True, now=NOW)


def test_catch_up_projects_accounts_optouts_routes_and_files(store: SmsStore, tmp_path: Path) -> None:
    populate(store)
    models = ReadModels(tmp_path / "read.db")
    models.catch_up(store)
    dump = models.dump()
    assert dump["accounts"][0]["balance"] == 50
    assert dump["optouts"] == [{"account": "acme", "msisdn": "27831234567"}]
    assert dump["routes"] == [{"prefix": "2799", "gateway": "simulator"}]
    assert [(f["name"], f["status"], f["error_code"]) for f in dump["files"]] == [("a.json", "failed", "File.Corrupt")]


def test_catch_up_resumes_from_its_stored_position(store: SmsStore, tmp_path: Path) -> None:
    populate(store)
    models = ReadModels(tmp_path / "read.db")
    first = models.catch_up(store)
    store.add_credits("acme", 5)
    second = ReadModels(tmp_path / "read.db").catch_up(store)
    assert second > first
    assert models.dump()["accounts"][0]["balance"] == 55


def test_rebuild_gives_identical_content(store: SmsStore, tmp_path: Path) -> None:
    populate(store)
    models = ReadModels(tmp_path / "read.db")
    models.catch_up(store)
    before = models.dump()
    models.rebuild(store)
    assert models.dump() == before


def test_opted_out_finds_only_listed_numbers(store: SmsStore, tmp_path: Path) -> None:
    populate(store)
    models = ReadModels(tmp_path / "read.db")
    models.catch_up(store)
    assert models.opted_out("acme", ["27831234567", "27831234568", "27000000000"]) == {"27831234567"}
