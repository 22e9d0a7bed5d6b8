"""The delivery-CSV follower (actors/delivery_csv.py) resumes from its saved position."""

from __future__ import annotations

import csv
import sqlite3
import time
from pathlib import Path

from actors.delivery_csv import _Follower
from eventstore.store import open_store
from sftpsms.config import Settings
from tests.service import running_service
from tests.test_e2e import send, v7

NUMBERS = ["27831239101", "27831239102", "27831239103"]


def _final_rows(path: Path, timeout: float = 40.0) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        if path.exists():
            rows = list(csv.DictReader(path.read_text().splitlines()))
            if len(rows) == len(NUMBERS) and all(r["status"] in ("delivered", "failed", "expired") for r in rows):
                return rows
        time.sleep(0.1)
    raise AssertionError(f"no final delivery CSV: {rows}")


def test_a_restart_resumes_from_the_saved_position_and_never_rereads_the_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    state = Settings.from_env(data_dir=data_dir).local_dir / "delivery_csv.db"  # the node's own folder
    with running_service(data_dir) as service:
        service.add_account("acme")
        send(service, "acme", "csv.json", v7(Message_Template="x", Contacts=[{"msisdn": n} for n in NUMBERS]))
        path = service.folder("acme", "Processed") / "csv.json.delivery.csv"
        _final_rows(path)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the follower saves "final" just after it wrote the CSV
            with sqlite3.connect(state) as db:
                states = [state for (state,) in db.execute("SELECT state FROM files")]
            if states == ["final"]:
                break
            time.sleep(0.1)
        assert states == ["final"]
    store = open_store(data_dir)
    try:
        last = store.last_position()
    finally:
        store.close()
    with sqlite3.connect(state) as db:
        (position,) = db.execute("SELECT position FROM position").fetchone()
    assert 0 < position <= last
    path.unlink()  # the customer deleted it: a follower reading from 0 again would write it back
    with running_service(data_dir) as service:
        time.sleep(3)  # three rounds of the follower
        assert not path.exists()
        assert "delivery CSV round failed" not in service.log()


def test_a_file_due_before_a_crash_is_written_after_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_service(data_dir) as service:
        service.add_account("acme")
        send(service, "acme", "due.json", v7(Message_Template="x", Contacts=[{"msisdn": n} for n in NUMBERS]))
        path = service.folder("acme", "Processed") / "due.json.delivery.csv"
        expected = _final_rows(path)
    settings = Settings.from_env(data_dir=data_dir)
    (settings.local_dir / "delivery_csv.db").unlink()
    path.unlink()
    store = open_store(data_dir)
    try:
        crashed = _Follower(settings)
        crashed.open()
        crashed.read(store)
        assert len(crashed.pending) == 1
        crashed.close()  # it died before writing the CSV
        follower = _Follower(settings)
        follower.open()
        assert follower.pending == crashed.pending and follower.position == crashed.position == store.last_position()
        (file_id,) = follower.pending
        assert follower.rewrite(store, file_id)
        follower.settled(file_id, final=True)
        follower.close()
    finally:
        store.close()
    assert list(csv.DictReader(path.read_text().splitlines())) == expected
    again = _Follower(settings)
    again.open()
    assert again.pending == set() and again.final == {file_id}
    again.close()
