"""The applications' event store recorder: eventsourcing's PostgreSQL recorder plus idempotency
keys.

The ``IdempotencyRecord``s passed to ``Application.save(..., records=[...])`` are inserted
in the same transaction as the events, into the one ``idempotency_keys`` table that every
application shares (adapters/postgres/idempotency.py). A replayed key collides on the primary
key, the whole transaction rolls back, and the command layer answers with the first result.

Every statement of the insert pipeline is prepared explicitly (``prepare=True``), ours and
eventsourcing's alike. psycopg (3.3) also prepares on its own any statement it has run five
times on a connection, and in pipeline mode it records that statement as prepared as soon as it
queues the Parse, without checking the Parse's result. When an earlier statement of the same
pipeline fails (a side record colliding with a concurrent transaction's), PostgreSQL skips that
Parse; eventsourcing catches the error inside the transaction, which then ends with COMMIT
(answered ROLLBACK) rather than psycopg's rollback that would clear its cache, and the
connection failed every later save with 'prepared statement "_pg3_N" does not exist'. A
statement prepared explicitly is checked: a skipped Parse is forgotten
(tests/integration/test_side_record_conflicts.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from adapters.postgres import idempotency
from commands.idempotency import IdempotencyRecord


class IdempotentPostgresRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(self.datastore.schema)
        self._events = Identifier(events_table_name)
        self.sql_create_statements.append(idempotency.create_statement(self.datastore.schema))
        self._insert_key = idempotency.insert_statement(self.datastore.schema)
        self._select_key = idempotency.select_statement(self.datastore.schema)
        self._select_after = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM {schema}.{events} e "
            "JOIN unnest(%s::uuid[], %s::bigint[]) AS a(id, version) "
            "ON e.originator_id = a.id AND e.originator_version > a.version "
            "ORDER BY e.originator_id, e.originator_version"
        ).format(schema=schema, events=self._events)
        self._notify = SQL("NOTIFY {channel}").format(channel=Identifier(self.channel_name))
        self._select_position = SQL(
            "SELECT notification_id FROM {schema}.{events} "
            "WHERE originator_id = %s AND originator_version = %s"
        ).format(schema=schema, events=self._events)

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        records = [r for r in kwargs.get("records") or () if isinstance(r, IdempotencyRecord)]
        if records:  # executemany prepares its statement explicitly
            curs.executemany(self._insert_key, idempotency.insert_rows(records))
        super()._insert_events(curs, stored_events, **kwargs)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """eventsourcing's (9.5) lock, notify and insert, with the NOTIFY and the INSERT
        prepared explicitly (see the module's docstring); the lock statements already are."""
        self._lock_table(curs)
        curs.execute(self._notify, prepare=True)
        rows = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        curs.execute(self.insert_events_statement, (rows,), prepare=True)

    def select_events_after(self, after: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """The stored events of several aggregates, each above its given version, in
        (aggregate, version) order: one query to bring a whole batch of aggregates up to date."""
        if not after:
            return []
        ids = [a for a, _ in after]
        versions = [v for _, v in after]
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_after, (ids, versions))
            rows = curs.fetchall()
        return [
            StoredEvent(
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )  # fmt: skip
            for row in rows
        ]

    def get_idempotency_record(self, space_id: str, key: str) -> IdempotencyRecord | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_key, (space_id, key))
            row = curs.fetchone()
        return None if row is None else idempotency.record_of(row)

    def position_of(self, aggregate_id: UUID, version: int) -> int | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_position, (aggregate_id, version))
            row = curs.fetchone()
        return None if row is None else row["notification_id"]
