"""The webhooks' event store recorder: idempotency keys plus signing secrets.

A ``SecretRecord`` passed in ``Application.save(..., records=[...])`` is inserted in the same
transaction as the event that introduced its version, and caps how long the endpoint's older
secrets keep signing. Secrets live only in ``webhook_secrets``: never in an event, so never on
Kafka or in analytics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from adapters.postgres.recorder import IdempotentPostgresRecorder
from commands.webhooks import SecretRecord

SECRETS_TABLE = "webhook_secrets"


class WebhooksPostgresRecorder(IdempotentPostgresRecorder):
    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        table = SQL("{schema}.{table}").format(
            schema=Identifier(self.datastore.schema), table=Identifier(SECRETS_TABLE)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {table} ("
                "endpoint_id uuid NOT NULL, secret_version integer NOT NULL, "
                "secret text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
                "expires_at timestamptz, PRIMARY KEY (endpoint_id, secret_version))"
            ).format(table=table)
        )
        self._insert_secret = SQL(
            "INSERT INTO {table} (endpoint_id, secret_version, secret) VALUES (%s, %s, %s)"
        ).format(table=table)
        self._expire_older = SQL(
            "UPDATE {table} SET expires_at = LEAST(COALESCE(expires_at, %s), %s) "
            "WHERE endpoint_id = %s AND secret_version < %s"
        ).format(table=table)
        self._select_secret = SQL(
            "SELECT secret FROM {table} WHERE endpoint_id = %s AND secret_version = %s"
        ).format(table=table)

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # prepared explicitly, as every statement of the insert pipeline (adapters/postgres/
        # recorder.py): one that collides must not leave a later statement's Parse unchecked
        for r in kwargs.get("records") or ():
            if isinstance(r, SecretRecord):
                curs.execute(self._insert_secret, (r.endpoint_id, r.secret_version, r.secret),
                             prepare=True)  # fmt: skip
                if r.previous_expires_at is not None:
                    at = r.previous_expires_at
                    curs.execute(self._expire_older, (at, at, r.endpoint_id, r.secret_version),
                                 prepare=True)  # fmt: skip
        super()._insert_events(curs, stored_events, **kwargs)

    def get_secret(self, endpoint_id: UUID, version: int) -> str | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_secret, (endpoint_id, version))
            row = curs.fetchone()
        return None if row is None else row["secret"]
