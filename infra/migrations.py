"""Schema setup: ordered SQL files for PostgreSQL read models and ClickHouse analytics tables."""

from __future__ import annotations

from importlib import resources
from typing import Any

from psycopg_pool import ConnectionPool

LOCK_ID = 7_201_020  # advisory lock: one migrator at a time


def _scripts(kind: str) -> list[tuple[str, str]]:
    folder = resources.files("infra") / "sql" / kind
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name, f.read_text()) for f in files]


def migrate_postgres(pool: ConnectionPool) -> list[str]:
    """Apply every PostgreSQL script not applied yet, each in its own transaction."""
    applied: list[str] = []
    with pool.connection() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for name, sql in _scripts("postgres"):
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)  # type: ignore[arg-type]
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                applied.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
            conn.commit()
    return applied


def clickhouse_statements(database: str) -> list[str]:
    """Every ClickHouse DDL statement, with ``{db}`` replaced by the database name."""
    statements: list[str] = []
    for _, sql in _scripts("clickhouse"):
        lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
        for stmt in "\n".join(lines).split(";"):
            if stmt.strip():
                statements.append(stmt.strip().replace("{db}", database))
    return statements


def migrate_clickhouse(client: Any, database: str) -> None:
    """Create the database and tables (idempotent: CREATE ... IF NOT EXISTS)."""
    client.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    for stmt in clickhouse_statements(database):
        client.execute(stmt)
