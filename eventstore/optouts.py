"""The opt-out lookup on the read-model database, on a plain sqlite3 connection: shared by
ReadModels and by pass-one worker processes, which import no more than they need."""

from __future__ import annotations

import sqlite3

LOOKUP_CHUNK = 500  # numbers per query, well under SQLite's bound-parameter limit


def find_optouts(conn: sqlite3.Connection, account: str, msisdns: list[str]) -> set[str]:
    """Which of `msisdns` have opted out of `account`'s messages."""
    found: set[str] = set()
    for start in range(0, len(msisdns), LOOKUP_CHUNK):
        chunk = msisdns[start : start + LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT msisdn FROM optouts WHERE account = ? AND msisdn IN ({marks})",  # noqa: S608 - only ?s
            [account, *chunk],
        )
        found.update(row[0] for row in rows)
    return found
