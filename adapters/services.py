"""The port every adapter takes its dependencies through: what the composition root
(``infra.bootstrap.Container``) offers. Adapters name this Protocol instead of ``Any``, so mypy
checks what they use, and a test can hand them anything that has these members."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from psycopg_pool import ConnectionPool

from commands.agents import AgentsApplication
from commands.billing import BillingApplication
from commands.calls import CallsApplication
from commands.numbers import NumbersApplication
from commands.webhooks import WebhooksApplication
from infra.settings import Settings

if TYPE_CHECKING:
    from adapters.telephony.providers import TelephonyProviders


class Services(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def pool(self) -> ConnectionPool:
        """Read models, tracking, relay positions (autocommit off)."""
        ...

    @property
    def agents(self) -> AgentsApplication: ...

    @property
    def calls(self) -> CallsApplication: ...

    @property
    def webhooks(self) -> WebhooksApplication: ...

    @property
    def numbers(self) -> NumbersApplication: ...

    @property
    def billing(self) -> BillingApplication: ...

    @property
    def telephony_providers(self) -> TelephonyProviders:
        """The provider adapters by name (adapters/telephony/providers.py)."""
        ...

    @property
    def verifier(self) -> Any:
        """Checks a bearer token: ``adapters.api.auth.JwtVerifier`` or a test's."""
        ...

    @property
    def producer(self) -> Any:
        """The process's Kafka producer (``adapters.kafka.producer.build_producer``)."""
        ...

    def applications(self) -> tuple[Any, ...]:
        """Every event-sourced application, in the order the relay publishes them."""
        ...

    def clickhouse(self) -> Any:
        """A new ClickHouse client (not thread-safe: one per thread or task)."""
        ...

    def topic(self, context: str) -> str: ...

    def close(self) -> None: ...
