"""ClickHouse native-protocol client (clickhouse-driver), built from settings.

clickhouse-driver clients are not thread-safe: make one per thread or task. Compression is off
(loopback; the lz4 extra is not a dependency). Works with the local stack's ClickHouse 18.16 and
current servers. Nothing connects until the first query.

A client whose database does not exist yet creates it on first connect (``CREATE DATABASE IF NOT
EXISTS``, exactly what the migration would do) instead of failing the handshake, so the migrator
can use the same client as everything else.
"""

from __future__ import annotations

import logging
from typing import Any

from clickhouse_driver import Client, errors

log = logging.getLogger(__name__)


class _Client(Client):
    def establish_connection(self, settings: Any) -> None:
        try:
            super().establish_connection(settings)
        except errors.ServerException as exc:
            if exc.code != errors.ErrorCodes.UNKNOWN_DATABASE:
                raise
            wanted = self.connection.database
            log.warning("ClickHouse database %s does not exist; creating it", wanted)
            self.disconnect()
            bootstrap = Client(**{**self._connect_kwargs, "database": "default"})
            try:
                bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS `{wanted}`")
            finally:
                bootstrap.disconnect()
            super().establish_connection(settings)


def connect(ch_settings: Any, *, database: str | None = None) -> Client:
    """A lazily connecting client to ``ch_settings`` (``infra.settings.ClickHouseSettings``)."""
    kwargs: dict[str, Any] = {
        "host": ch_settings.host,
        "port": ch_settings.port,
        "database": database or ch_settings.database,
        "user": ch_settings.user,
        "password": ch_settings.password,
        "connect_timeout": 5,
        "send_receive_timeout": 60,
        "sync_request_timeout": 5,
        "compression": False,
        "client_name": "voxagent",
    }
    client = _Client(**kwargs)
    client._connect_kwargs = kwargs
    return client
