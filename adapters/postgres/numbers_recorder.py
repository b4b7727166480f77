"""The numbers' event store recorder: idempotency keys, number claims and secrets.

Side records passed in ``Application.save(..., records=[...])`` are written in the same
transaction as the events (commands/numbers.py):

- ``number_claims``: one row per active E.164 number (primary key ``e164``). A second claim of
  the same number collides, the whole transaction rolls back (``IntegrityError``), and the
  command answers ``number_taken``. Releasing deletes the row with ``number.released``.
- ``trunk_secrets`` and ``provider_account_secrets``: trunk passwords and provider credentials.
  Never in an event (so never on Kafka or in analytics), never returned by the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier
from psycopg.types.json import Jsonb

from adapters.postgres.recorder import IdempotentPostgresRecorder
from commands.numbers import (
    AccountSecretDropped,
    AccountSecretRecord,
    ClaimReleased,
    NumberClaim,
    TrunkSecretDropped,
    TrunkSecretRecord,
)

_TABLES = {
    "number_claims": (
        "e164 text PRIMARY KEY, number_id uuid NOT NULL UNIQUE, space_id text NOT NULL, "
        "provider text NOT NULL, trunk_id uuid, claimed_at timestamptz NOT NULL DEFAULT now()"
    ),
    "trunk_secrets": (
        "trunk_id uuid PRIMARY KEY, inbound_password text, outbound_password text, "
        "updated_at timestamptz NOT NULL DEFAULT now()"
    ),
    "provider_account_secrets": (
        "account_id uuid PRIMARY KEY, secrets jsonb NOT NULL, "
        "updated_at timestamptz NOT NULL DEFAULT now()"
    ),
}


class NumbersPostgresRecorder(IdempotentPostgresRecorder):
    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(self.datastore.schema)

        def sql(text: str, table: str) -> Composed:
            return SQL(text).format(table=SQL("{}.{}").format(schema, Identifier(table)))

        for table, columns in _TABLES.items():
            self.sql_create_statements.append(
                sql("CREATE TABLE IF NOT EXISTS {table} (" + columns + ")", table)
            )
        self.sql_create_statements.append(
            sql(
                "CREATE INDEX IF NOT EXISTS number_claims_trunk ON {table} (trunk_id)",
                "number_claims",
            )  # fmt: skip
        )
        self._claim = sql(
            "INSERT INTO {table} (e164, number_id, space_id, provider, trunk_id) "
            "VALUES (%s, %s, %s, %s, %s)",
            "number_claims",
        )
        self._unclaim = sql("DELETE FROM {table} WHERE e164 = %s AND number_id = %s",
                            "number_claims")  # fmt: skip
        self._claimed = sql("SELECT number_id FROM {table} WHERE e164 = %s", "number_claims")
        self._in_use = sql("SELECT 1 FROM {table} WHERE trunk_id = %s LIMIT 1", "number_claims")
        self._put_trunk = sql(
            "INSERT INTO {table} (trunk_id, inbound_password, outbound_password) "
            "VALUES (%s, %s, %s) ON CONFLICT (trunk_id) DO UPDATE SET "
            "inbound_password = excluded.inbound_password, "
            "outbound_password = excluded.outbound_password, updated_at = now()",
            "trunk_secrets",
        )
        self._drop_trunk = sql("DELETE FROM {table} WHERE trunk_id = %s", "trunk_secrets")
        self._trunk = sql(
            "SELECT inbound_password, outbound_password FROM {table} WHERE trunk_id = %s",
            "trunk_secrets",
        )
        self._put_account = sql(
            "INSERT INTO {table} (account_id, secrets) VALUES (%s, %s) "
            "ON CONFLICT (account_id) DO UPDATE SET secrets = excluded.secrets, "
            "updated_at = now()",
            "provider_account_secrets",
        )
        self._drop_account = sql("DELETE FROM {table} WHERE account_id = %s",
                                 "provider_account_secrets")  # fmt: skip
        self._account = sql("SELECT secrets FROM {table} WHERE account_id = %s",
                            "provider_account_secrets")  # fmt: skip

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # prepared explicitly, as every statement of the insert pipeline (adapters/postgres/
        # recorder.py): one that collides must not leave a later statement's Parse unchecked
        for r in kwargs.get("records") or ():
            if isinstance(r, NumberClaim):
                curs.execute(self._claim, (r.e164, r.number_id, r.space_id, r.provider,
                                           r.trunk_id), prepare=True)  # fmt: skip
            elif isinstance(r, ClaimReleased):
                curs.execute(self._unclaim, (r.e164, r.number_id), prepare=True)
            elif isinstance(r, TrunkSecretRecord):
                curs.execute(self._put_trunk, (r.trunk_id, r.inbound_password,
                                               r.outbound_password), prepare=True)  # fmt: skip
            elif isinstance(r, TrunkSecretDropped):
                curs.execute(self._drop_trunk, (r.trunk_id,), prepare=True)
            elif isinstance(r, AccountSecretRecord):
                curs.execute(self._put_account, (r.account_id, Jsonb(dict(r.secrets))),
                             prepare=True)  # fmt: skip
            elif isinstance(r, AccountSecretDropped):
                curs.execute(self._drop_account, (r.account_id,), prepare=True)
        super()._insert_events(curs, stored_events, **kwargs)

    def _one(self, statement: Composed, *params: Any) -> DictRow | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(statement, params)
            return curs.fetchone()

    def claimed(self, e164: str) -> UUID | None:
        row = self._one(self._claimed, e164)
        return None if row is None else row["number_id"]

    def trunk_in_use(self, trunk_id: UUID) -> bool:
        return self._one(self._in_use, trunk_id) is not None

    def trunk_passwords(self, trunk_id: UUID) -> tuple[str | None, str | None] | None:
        row = self._one(self._trunk, trunk_id)
        return None if row is None else (row["inbound_password"], row["outbound_password"])

    def account_secrets(self, account_id: UUID) -> dict[str, str] | None:
        row = self._one(self._account, account_id)
        return None if row is None else dict(row["secrets"])
