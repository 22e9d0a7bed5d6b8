"""Read models follow the log, and a rebuild from the events gives identical content."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from eventstore.domain import file_name_id
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


VALIDATED = {
    "sha256": "ab" * 32, "size": 10, "envelope": None, "status": "invalid", "error_code": "InsufficientCredits",
    "contacts": 3, "would_queue": 0, "optouts_skipped": 1, "contact_errors": 0, "parts": 0, "credits_needed": 3,
    "validated_at": NOW.isoformat(),
}  # fmt: skip


def test_a_validation_is_a_row_of_the_validations_read_model_recorded_once(store: SmsStore, tmp_path: Path) -> None:
    populate(store)
    fields = {"account": "acme", "name": "v.json", "received_at": NOW.isoformat(), **VALIDATED}
    assert store.record_validation(**fields)
    assert not store.record_validation(**fields)  # a resumed validation records nothing again
    models = ReadModels(tmp_path / "read.db")
    models.catch_up(store)
    (row,) = models.validations(account="acme")
    assert (row["name"], row["status"], row["credits_needed"], row["optouts_skipped"]) == ("v.json", "invalid", 3, 1)
    assert models.validations(name="other.json") == []
    before = models.dump()
    models.rebuild(store)
    assert models.dump() == before


def test_a_read_model_made_before_validations_gets_their_table(store: SmsStore, tmp_path: Path) -> None:
    models = ReadModels(tmp_path / "read.db")
    models.db.table("validations").drop()
    models.close()
    assert ReadModels(tmp_path / "read.db").validations() == []


def test_would_be_duplicate_reads_the_name_as_receive_file_decides_it_and_takes_nothing(store: SmsStore) -> None:
    populate(store)
    assert store.would_be_duplicate("acme", "new.json", NOW) is None
    receipt = store.receive_file(account="acme", name="b.json", size=1, fingerprint="s", now=NOW)
    assert store.would_be_duplicate("acme", "b.json", NOW) == str(receipt.file_id)  # in flight
    store.accept_file(receipt.file_id, credits=0, summary={
        "contacts": 1, "messages": 1, "rejected": 0, "optouts": 0, "parts": 1, "batches": 1, "sender_id": "Fixed",
        "not_before": None, "expires_at": None, "email": None, "warnings": [],
    })  # fmt: skip
    store.complete_file(receipt.file_id, NOW)
    assert store.would_be_duplicate("acme", "b.json", NOW) == NOW.isoformat()
    assert store.would_be_duplicate("acme", "b.json", NOW + timedelta(hours=48)) is None
    assert store.would_be_duplicate("acme", "a.json", NOW) is None  # failed: the name is free
    assert not store.exists(file_name_id("acme", "new.json"))
