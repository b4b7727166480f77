"""The composition root: builds applications, pools and clients from settings.

Nothing connects at import time. Every entry point (API, relay, projectors, CLI) and every test
builds its graph here; tests pass overrides (e.g. ``verifier=``) to replace a piece.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from commands.agents import AgentsApplication
from commands.billing import BillingApplication
from commands.calls import CallsApplication
from commands.numbers import NumbersApplication
from commands.webhooks import WebhooksApplication
from domain.providers import problems
from infra.settings import Settings

RECORDER_TOPIC = "adapters.postgres.recorder:IdempotentPostgresRecorder"
WEBHOOKS_RECORDER_TOPIC = "adapters.postgres.webhook_recorder:WebhooksPostgresRecorder"
NUMBERS_RECORDER_TOPIC = "adapters.postgres.numbers_recorder:NumbersPostgresRecorder"
FACTORY_TOPIC = "adapters.postgres.datastore:SharedPostgresFactory"


def eventsourcing_env(settings: Settings) -> dict[str, str]:
    """Persistence is configuration: eventsourcing's PostgreSQL module (one pool per process,
    shared by the applications: adapters/postgres/datastore.py), our recorder, pool sizes."""
    pg = settings.postgres
    return {
        "PERSISTENCE_MODULE": FACTORY_TOPIC,
        "APPLICATION_RECORDER_TOPIC": RECORDER_TOPIC,
        "POSTGRES_DBNAME": pg.database,
        "POSTGRES_HOST": pg.host,
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password,
        # psycopg_pool keeps POOL_SIZE connections open for good and grows by MAX_OVERFLOW
        "POSTGRES_POOL_SIZE": str(pg.pool_min),
        "POSTGRES_MAX_OVERFLOW": str(max(pg.pool_max - pg.pool_min, 0)),
        "POSTGRES_MAX_IDLE": str(pg.pool_max_idle_seconds),
        "POSTGRES_CONNECT_TIMEOUT": str(pg.pool_timeout_seconds),
        "POSTGRES_LOGIN_TIMEOUT": str(pg.connect_timeout_seconds),
        "POSTGRES_APPLICATION_NAME": pg.application_name,
        "POSTGRES_LOCK_TIMEOUT": "5",
        # a pooled connection is checked before use: after PostgreSQL restarted (or terminated
        # sessions) a dead one is replaced instead of failing the command that drew it
        "POSTGRES_PRE_PING": "y",
        "CREATE_TABLE": "y",
        "AGGREGATE_CACHE_MAXSIZE": "10000",
        "AGGREGATE_CACHE_FASTFORWARD": "y",
    }


SCHEMA_LOCK = 7_201_021  # advisory lock: one process at a time creates event-store tables


@contextmanager
def schema_lock(settings: Settings) -> Iterator[None]:
    """Serialise eventsourcing's table and function creation across processes: processes that
    start together (relay, dispatcher, sender...) would otherwise race on ``CREATE OR REPLACE
    FUNCTION`` ("tuple concurrently updated")."""
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))


@dataclass
class Container:
    settings: Settings
    overrides: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def agents(self) -> AgentsApplication:
        if "agents" in self.overrides:
            return self.overrides["agents"]
        credentials = self.settings.providers.credentials()
        with schema_lock(self.settings):
            return AgentsApplication(
                env=eventsourcing_env(self.settings),
                provider_problems=lambda config: problems(config, credentials),
            )

    @cached_property
    def calls(self) -> CallsApplication:
        """The calls write side; it checks new calls' agents through ``agents`` (lazily)."""
        if "calls" in self.overrides:
            return self.overrides["calls"]
        with schema_lock(self.settings):
            return self._calls()

    def _calls(self) -> CallsApplication:
        return CallsApplication(
            env=eventsourcing_env(self.settings),
            agent_lookup=lambda actor, agent_id: self.agents.get_agent(actor, agent_id),
        )

    @cached_property
    def webhooks(self) -> WebhooksApplication:
        """Webhook endpoints; its recorder also stores their signing secrets."""
        if "webhooks" in self.overrides:
            return self.overrides["webhooks"]
        env = eventsourcing_env(self.settings)
        env["APPLICATION_RECORDER_TOPIC"] = WEBHOOKS_RECORDER_TOPIC
        with schema_lock(self.settings):
            return WebhooksApplication(env=env)

    @cached_property
    def numbers(self) -> NumbersApplication:
        """Phone numbers, SIP trunks and provider accounts; its recorder also keeps the number
        claims (one active E.164 number at a time) and the trunks' and accounts' secrets."""
        if "numbers" in self.overrides:
            return self.overrides["numbers"]
        env = eventsourcing_env(self.settings)
        env["APPLICATION_RECORDER_TOPIC"] = NUMBERS_RECORDER_TOPIC
        with schema_lock(self.settings):
            return NumbersApplication(
                env=env, agent_lookup=lambda actor, agent_id: self.agents.get_agent(actor, agent_id)
            )

    @cached_property
    def billing(self) -> BillingApplication:
        """Billing accounts (plans, periods, credit wallet, budgets), one per space."""
        if "billing" in self.overrides:
            return self.overrides["billing"]
        with schema_lock(self.settings):
            return BillingApplication(env=eventsourcing_env(self.settings))

    @cached_property
    def telephony_providers(self) -> Any:
        """The provider adapters (``adapters.telephony.providers.TelephonyProviders``); each
        adapter registers itself here."""
        if "telephony_providers" in self.overrides:
            return self.overrides["telephony_providers"]
        from adapters.telephony.providers import TelephonyProviders
        from adapters.telephony.sip import SipVoiceProvider
        from adapters.telephony.twilio import TwilioProvider
        from adapters.telephony.voximplant import VoximplantProvider
        from commands.telephony import NumberProvider, VoiceProvider

        twilio = TwilioProvider(self.settings.telephony)
        voximplant = VoximplantProvider(self.settings.telephony)
        # our SIP service: the trunks (numbers context) are looked up when a call is placed
        sip = SipVoiceProvider(self.settings.telephony, lambda: self.numbers)
        # typed lists: mypy checks that each adapter speaks the ports it is registered for
        sell_numbers: list[NumberProvider] = [twilio, voximplant]
        place_calls: list[VoiceProvider] = [twilio, voximplant, sip]
        providers = TelephonyProviders()
        for adapter in {id(a): a for a in [*sell_numbers, *place_calls]}.values():
            providers.register(adapter)
        return providers

    def applications(self) -> tuple[Any, ...]:
        """Every event-sourced application, in the order the relay publishes them."""
        return (self.agents, self.calls, self.webhooks, self.numbers, self.billing)

    @cached_property
    def pool(self) -> ConnectionPool:
        """Pool for read models, tracking and relay positions (autocommit off)."""
        if "pool" in self.overrides:
            return self.overrides["pool"]
        pg = self.settings.postgres
        pool = ConnectionPool(
            pg.conninfo(),
            min_size=pg.pool_min,
            max_size=max(pg.pool_max, pg.pool_min),
            max_idle=pg.pool_max_idle_seconds,
            timeout=pg.pool_timeout_seconds,
            check=ConnectionPool.check_connection,  # as the event store's pool (pre-ping)
            open=False,
            name=f"{pg.application_name}-read",
        )
        pool.open(wait=pg.pool_min > 0, timeout=pg.pool_timeout_seconds)
        return pool

    @cached_property
    def verifier(self) -> Any:
        if "verifier" in self.overrides:
            return self.overrides["verifier"]
        from adapters.api.auth import JwtVerifier

        return JwtVerifier(self.settings.auth)

    @cached_property
    def producer(self) -> Any:
        """A Kafka producer for what this process sends (e.g. provider webhooks' signals)."""
        if "producer" in self.overrides:
            return self.overrides["producer"]
        from adapters.kafka.producer import build_producer

        return build_producer(self.settings)

    def clickhouse(self) -> Any:
        """A new ClickHouse client (clickhouse-driver clients are not thread-safe)."""
        from adapters.clickhouse.client import connect

        return connect(self.settings.clickhouse)

    def topic(self, context: str) -> str:
        return f"{self.settings.topic_prefix}.{context}.v1"

    def close(self) -> None:
        if "pool" in self.__dict__ and "pool" not in self.overrides:
            self.pool.close()
        if "producer" in self.__dict__ and "producer" not in self.overrides:
            self.producer.flush(10)
        if "agents" in self.__dict__ and "agents" not in self.overrides:
            self.agents.close()
        if "calls" in self.__dict__ and "calls" not in self.overrides:
            self.calls.close()
        if "webhooks" in self.__dict__ and "webhooks" not in self.overrides:
            self.webhooks.close()
        if "numbers" in self.__dict__ and "numbers" not in self.overrides:
            self.numbers.close()
        if "billing" in self.__dict__ and "billing" not in self.overrides:
            self.billing.close()


def bootstrap(settings: Settings | None = None, **overrides: Any) -> Container:
    return Container(settings or Settings(), overrides)
