"""eventsourcing's PostgreSQL factory, with one connection pool per process and database.

eventsourcing gives every Application a datastore of its own, and each datastore a pool that
keeps ``POSTGRES_POOL_SIZE`` connections open for good: three applications (agents, calls,
webhooks) at ten each made the relay and the API hold ~35 idle connections apiece. Here the
applications of one process that name the same database with the same settings share one
datastore (so one pool), which is closed when the last of them closes. Two more settings reach
that pool: ``POSTGRES_MAX_IDLE`` (seconds after which a connection above the pool's minimum is
closed; eventsourcing keeps psycopg_pool's 10 minutes), ``POSTGRES_APPLICATION_NAME`` (what
``pg_stat_activity`` shows for these connections) and ``POSTGRES_LOGIN_TIMEOUT`` (libpq's
``connect_timeout``: eventsourcing's ``POSTGRES_CONNECT_TIMEOUT`` is the wait for a pooled
connection).

Selected with ``PERSISTENCE_MODULE=adapters.postgres.datastore:SharedPostgresFactory``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from eventsourcing.postgres import BasePostgresFactory, PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, EnvType

POSTGRES_MAX_IDLE = "POSTGRES_MAX_IDLE"
POSTGRES_APPLICATION_NAME = "POSTGRES_APPLICATION_NAME"
POSTGRES_LOGIN_TIMEOUT = "POSTGRES_LOGIN_TIMEOUT"
# every key that shapes a datastore: applications share one only when all of them agree
_KEYS = tuple(
    sorted(
        value
        for name, value in vars(BasePostgresFactory).items()
        if name.startswith("POSTGRES_") or name == "ORIGINATOR_ID_TYPE"
    )
) + (POSTGRES_MAX_IDLE, POSTGRES_APPLICATION_NAME, POSTGRES_LOGIN_TIMEOUT)


class _Shared:
    """The datastores in use in this process, each with how many factories hold it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str | None, ...], tuple[PostgresDatastore, int]] = {}

    def acquire(self, key: tuple[str | None, ...], fresh: PostgresDatastore) -> PostgresDatastore:
        """The datastore for ``key``: the one in use, else ``fresh`` (then it is kept)."""
        with self._lock:
            datastore, users = self._held.get(key, (fresh, 0))
            self._held[key] = (datastore, users + 1)
            return datastore

    def release(self, key: tuple[str | None, ...]) -> None:
        """One holder fewer; the last one closes the datastore's pool."""
        with self._lock:
            if key not in self._held:
                return
            datastore, users = self._held[key]
            if users > 1:
                self._held[key] = (datastore, users - 1)
                return
            del self._held[key]
        datastore.close()

    def users(self, datastore: PostgresDatastore) -> int:
        with self._lock:
            return sum(n for held, n in self._held.values() if held is datastore)


SHARED = _Shared()


class SharedPostgresFactory(PostgresFactory):
    def __init__(self, env: Environment | EnvType | None) -> None:
        # eventsourcing builds a datastore whose pool is not open yet (it opens on first use):
        # cheap to throw away when this process already has one for the same settings
        super().__init__(env)
        own = self.datastore
        self._key: tuple[str | None, ...] | None = tuple(self.env.get(k) for k in _KEYS)
        self.datastore = SHARED.acquire(self._key, own)
        if self.datastore is own:
            _configure(own, self.env)

    def close(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            SHARED.release(key)

    def __del__(self) -> None:
        # an Application whose construction failed never closes its factory
        with contextlib.suppress(Exception):  # nothing else to do at collection time
            self.close()


def _configure(datastore: PostgresDatastore, env: Environment) -> None:
    """What eventsourcing does not pass to the pool; set before the pool opens."""
    pool: Any = datastore.pool
    max_idle = env.get(POSTGRES_MAX_IDLE)
    if max_idle:
        pool.max_idle = float(max_idle)
    name = env.get(POSTGRES_APPLICATION_NAME)
    if name:
        pool.kwargs["application_name"] = name
        pool.name = f"{name}-eventstore"
    timeout = env.get(POSTGRES_LOGIN_TIMEOUT)
    if timeout:  # an attempt to reach a host that does not answer gives up, too
        pool.kwargs["connect_timeout"] = int(timeout)
