"""The SMPP gateway's journal of accepted parts: what survives a restart, and what it forgets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from actors.submit_journal import JOURNAL_NAME, SubmitJournal

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _id(n: int) -> uuid.UUID:
    return uuid.UUID(int=n + 1)


def _lines(directory: Path) -> list[str]:
    return (directory / JOURNAL_NAME).read_text().splitlines()


def test_done_and_partly_sent_messages_survive_reopening(tmp_path: Path) -> None:
    journal = SubmitJournal(tmp_path, now=NOW)
    journal.record(_id(1), 5, 1, ("A",), NOW)
    journal.record(_id(2), 6, 3, ("B1",), NOW)
    journal.record(_id(2), 6, 3, ("B1", "B2"), NOW)
    journal.close()
    again = SubmitJournal(tmp_path, now=NOW)
    one, two = again.get(_id(1)), again.get(_id(2))
    assert one is not None and one.done and one.ids == ("A",)
    assert two is not None and not two.done and (two.reference, two.ids) == (6, ("B1", "B2"))
    assert again.get(_id(3)) is None
    again.close()


def test_each_accepted_part_is_on_disk_before_close(tmp_path: Path) -> None:
    journal = SubmitJournal(tmp_path, now=NOW)
    journal.record(_id(1), 5, 1, ("A",), NOW)
    reader = SubmitJournal(tmp_path, now=NOW)  # as the next process would, after a SIGKILL of this one
    assert reader.get(_id(1)) is not None
    reader.close()
    journal.close()


def test_a_line_torn_by_a_crash_is_skipped(tmp_path: Path) -> None:
    journal = SubmitJournal(tmp_path, now=NOW)
    journal.record(_id(1), 5, 1, ("A",), NOW)
    journal.close()
    with (tmp_path / JOURNAL_NAME).open("a") as file:
        file.write('{"m":"00000000-0000-0000-0000-00000000000')
    again = SubmitJournal(tmp_path, now=NOW)
    assert len(again) == 1
    again.record(_id(2), 6, 1, ("B",), NOW)  # appends after the rewritten file, not after the torn line
    again.close()
    assert len(SubmitJournal(tmp_path, now=NOW)) == 2


def test_opening_keeps_the_latest_line_per_message_and_forgets_old_or_too_many(tmp_path: Path) -> None:
    journal = SubmitJournal(tmp_path, now=NOW)
    journal.record(_id(0), 1, 1, ("old",), NOW - timedelta(days=8))
    for n in range(1, 6):
        journal.record(_id(n), n, 2, (f"{n}a",), NOW)
        journal.record(_id(n), n, 2, (f"{n}a", f"{n}b"), NOW)
    journal.close()
    assert len(_lines(tmp_path)) == 11
    again = SubmitJournal(tmp_path, now=NOW, keep=3)
    assert len(_lines(tmp_path)) == 3
    assert [again.get(_id(n)) is not None for n in range(6)] == [False, False, False, True, True, True]
    assert again.reference == 5  # the last reference used goes on, though its message was forgotten or not
    again.close()


def test_a_long_running_journal_is_compacted_when_it_doubles(tmp_path: Path) -> None:
    journal = SubmitJournal(tmp_path, now=NOW, keep=10)
    for n in range(25):
        journal.record(_id(n), n % 256, 1, (str(n),), NOW)
    assert len(_lines(tmp_path)) <= 20
    assert len(journal) == 10
    journal.close()
    again = SubmitJournal(tmp_path, now=NOW, keep=10)
    assert [again.get(_id(n)) is not None for n in (14, 15, 24)] == [False, True, True]
    again.close()
