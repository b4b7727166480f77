"""The idempotency keys of every application and route: ONE table, ``idempotency_keys``, in the
database that every application shares, keyed by (space, key). A key used for one command is
therefore refused for any other, whatever the application or route (docs/api.md).

Commands that write events insert their key's record in the same transaction as the events (the
recorders, ``records=``). Routes whose answer is no aggregate write (a test delivery, a replay)
claim the key, do their work and store their answer in one transaction (``answer_once``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg.sql import SQL, Composed, Identifier
from psycopg.types.json import Jsonb

from commands.idempotency import IdempotencyKeyReused, IdempotencyRecord, RequestKey, check_same

TABLE = "idempotency_keys"
_COLUMNS = "space_id, key, command, fingerprint, aggregate_id, version, response"


def _table(schema: str | None) -> Composed:
    if schema is None:
        return SQL("{table}").format(table=Identifier(TABLE))
    return SQL("{schema}.{table}").format(schema=Identifier(schema), table=Identifier(TABLE))


def create_statement(schema: str | None = None) -> Composed:
    return SQL(
        "CREATE TABLE IF NOT EXISTS {table} ("
        "space_id text NOT NULL, key text NOT NULL, command text NOT NULL, "
        "fingerprint text NOT NULL, aggregate_id uuid, version bigint, response jsonb, "
        "created_at timestamptz NOT NULL DEFAULT now(), "
        "PRIMARY KEY (space_id, key))"
    ).format(table=_table(schema))


def insert_statement(schema: str | None = None) -> Composed:
    return SQL(f"INSERT INTO {{table}} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)").format(
        table=_table(schema)
    )


def select_statement(schema: str | None = None) -> Composed:
    return SQL(f"SELECT {_COLUMNS} FROM {{table}} WHERE space_id = %s AND key = %s").format(
        table=_table(schema)
    )


def insert_rows(records: Sequence[IdempotencyRecord]) -> list[tuple[Any, ...]]:
    """The rows of ``records`` in key order: transactions that insert several keys (a group
    commit) take their locks in one order, so they cannot deadlock."""
    ordered = sorted(records, key=lambda r: (r.space_id, r.key))
    return [
        (r.space_id, r.key, r.command, r.fingerprint, r.aggregate_id, r.version,
         None if r.response is None else Jsonb(r.response))
        for r in ordered
    ]  # fmt: skip


def record_of(row: dict[str, Any]) -> IdempotencyRecord:
    return IdempotencyRecord(
        row["space_id"], row["key"], row["command"], row["fingerprint"],
        row["aggregate_id"], row["version"], row["response"],
    )  # fmt: skip


def find(conn: Connection[Any], space_id: str, key: str) -> IdempotencyRecord | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(select_statement(), (space_id, key)).fetchone()
    return None if row is None else record_of(row)


_CLAIM = SQL(
    "INSERT INTO {table} (space_id, key, command, fingerprint) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (space_id, key) DO NOTHING"
).format(table=_table(None))
_ANSWER = SQL("UPDATE {table} SET response = %s WHERE space_id = %s AND key = %s").format(
    table=_table(None)
)


def answer_once(
    conn: Connection[Any],
    space_id: str,
    key: RequestKey | None,
    command: str,
    work: Callable[[Connection[Any]], dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """``work``'s answer (a JSON object) and False; or, when ``key`` was used before for this
    very request, the first answer and True (``IdempotencyKeyReused`` for another request).

    The key is claimed first, in the transaction that does the work and stores its answer: a
    concurrent request with the same key waits for that transaction and then reads its answer
    (or, if it failed, does the work itself). A failed request stores nothing.
    """
    if key is None:
        with conn.transaction():
            return work(conn), False
    with conn.transaction():
        claim = conn.execute(_CLAIM, (space_id, key.key, command, key.request))
        if claim.rowcount == 1:
            answer = work(conn)
            conn.execute(_ANSWER, (Jsonb(answer), space_id, key.key))
            return answer, False
    with conn.transaction():
        record = find(conn, space_id, key.key)
    assert record is not None  # it was there a moment ago, and keys are never deleted
    check_same(record, command, key)
    if record.response is None:  # the key answered a command that wrote events
        raise IdempotencyKeyReused(key.key)
    return record.response, True
