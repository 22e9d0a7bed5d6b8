"""The webhook sender's position in the notification log, kept in PostgreSQL for several nodes.

The same two facts as `DATA/webhooks.db` on one node (actors/webhooks.py `Tracking`): the position
below which every POST is settled, and the (position, URL) pairs settled above it. In the store's
schema, so whichever node holds the `webhooks` lease next resumes where the last holder's
recorded outcomes end.

Thread safety: one connection, used from one worker thread at a time (as `Tracking`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eventstore.pg_connection import connect

POSITION_TABLE = "sftpsms_webhook_position"
SETTLED_TABLE = "sftpsms_webhook_settled"


class PostgresTracking:
    def __init__(self, env: Mapping[str, str]) -> None:
        import psycopg
        from psycopg import sql

        schema = env.get("POSTGRES_SCHEMA")

        def table(name: str) -> Any:
            return sql.Identifier(schema, name) if schema else sql.Identifier(name)

        self._position, self._settled = table(POSITION_TABLE), table(SETTLED_TABLE)
        self.db = connect(env, "sftpsms-webhooks")
        for statement in (
            "CREATE TABLE IF NOT EXISTS {} (id integer PRIMARY KEY CHECK (id = 1), position bigint NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {} (position bigint NOT NULL, url text NOT NULL, PRIMARY KEY (position, url))",
        ):
            try:
                self.db.execute(sql.SQL(statement).format(self._position if "id integer" in statement else self._settled))
            except psycopg.errors.UniqueViolation:
                pass  # another node made it at the same moment

    def load(self) -> tuple[int, set[tuple[int, str]]]:
        from psycopg import sql

        row = self.db.execute(sql.SQL("SELECT position FROM {} WHERE id = 1").format(self._position)).fetchone()
        settled = {(int(p), str(u)) for p, u in self.db.execute(sql.SQL("SELECT position, url FROM {}").format(self._settled))}
        return (int(row[0]) if row else 0), settled

    def save(self, position: int, settled: Sequence[tuple[int, str]]) -> None:
        from psycopg import sql

        with self.db.transaction():
            self.db.execute(
                sql.SQL(
                    "INSERT INTO {} (id, position) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET position = excluded.position"
                ).format(self._position),
                (position,),
            )
            pairs = [(p, u) for p, u in settled if p > position]
            if pairs:
                with self.db.cursor() as cursor:
                    cursor.executemany(
                        sql.SQL("INSERT INTO {} (position, url) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(self._settled),
                        pairs,
                    )
            self.db.execute(sql.SQL("DELETE FROM {} WHERE position <= %s").format(self._settled), (position,))

    def close(self) -> None:
        self.db.close()
