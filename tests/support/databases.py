"""Databases and topics of a test's own on the running stack, created, migrated and dropped."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import psycopg

from infra.bootstrap import bootstrap
from infra.migrations import migrate_clickhouse, migrate_postgres
from infra.settings import Settings


def _admin(settings: Settings) -> str:
    return settings.postgres.model_copy(update={"database": "postgres"}).conninfo()


@contextlib.contextmanager
def isolated(base: Settings, name: str) -> Iterator[Settings]:
    """Settings whose PostgreSQL database, ClickHouse database, topic prefix and LiveKit agent
    name are ``name``'s own (so a running platform's worker never takes a test's call, nor a
    test's worker the platform's), and whose connections say ``name`` in
    ``pg_stat_activity``; both databases are created and migrated, and dropped afterwards."""
    settings = base.model_copy(
        update={
            "environment": "test",
            "postgres": base.postgres.model_copy(
                update={"database": name, "application_name": name}
            ),
            "clickhouse": base.clickhouse.model_copy(update={"database": name}),
            "topic_prefix": name.replace("_", ""),
            "livekit": base.livekit.model_copy(update={"agent_name": name.replace("_", "-")}),
        }
    )
    try:
        admin = psycopg.connect(_admin(settings), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL of the local stack does not answer ({exc}); run `voxagent stack up` "
            "(make test does it for you)"
        ) from exc
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    container = bootstrap(settings)
    try:
        migrate_postgres(container.pool)
        container.agents  # creates the event store's tables  # noqa: B018
        container.webhooks  # noqa: B018 - and webhook_secrets
        container.numbers  # noqa: B018 - and the number claims and secrets
        migrate_clickhouse(container.clickhouse(), name)
    finally:
        container.close()
    try:
        yield settings
    finally:
        if not os.environ.get("VOXAGENT_KEEP_TEST_DATA"):
            _drop(settings, name)


def _drop(settings: Settings, name: str) -> None:
    from adapters.clickhouse.client import connect

    with contextlib.suppress(Exception):
        ch = connect(settings.clickhouse.model_copy(update={"database": "default"}))
        ch.execute(f"DROP DATABASE IF EXISTS {name}")
        ch.disconnect()
    # FORCE ends our own sessions; an autovacuum worker (which our role may not end) can
    # still hold the database for a moment, so try again briefly before giving up
    for attempt in range(10):
        try:
            with psycopg.connect(_admin(settings), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.Error:
            if attempt == 9:
                raise
            time.sleep(0.5)
