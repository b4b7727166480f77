"""The ProviderAccount aggregate: a space's account at a telephony provider (Twilio,
VoxImplant), one per space and provider.

Only the account id (Twilio's account SID, VoxImplant's account id) is public; the secrets
(auth token, API key, private key) are side records that the command side writes in the same
transaction and never puts in an event. Its id is derived from (space, provider), so two
concurrent connects of the same account meet on the aggregate's first version.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import DomainError

ACCOUNT_PROVIDERS = ("twilio", "voximplant")
_NAMESPACE = UUID("0b8e8f63-1d0a-4d55-9a57-5b1f6f2cf0a4")


class InvalidAccount(DomainError):
    code = "invalid_provider_account"


class AccountDisconnected(DomainError):
    code = "provider_account_not_found"


def account_id_of(space_id: str, provider: str) -> UUID:
    """The aggregate id of ``space_id``'s account at ``provider``."""
    return uuid5(_NAMESPACE, f"{space_id}\x1f{provider}")


class AccountEvent(Aggregate.Event):
    space_id: str
    provider: str
    account_id: str
    actor: str

    def apply(self, aggregate: Any) -> None:
        aggregate.set_state(self.space_id, self.provider, self.account_id, connected=True)


class ProviderAccount(Aggregate):
    TOPIC = "voxagent.ProviderAccount"

    class Created(Aggregate.Created):
        TOPIC = "provider_account.connected"
        SCHEMA_VERSION = 1
        space_id: str
        provider: str
        account_id: str
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.set_state(self.space_id, self.provider, self.account_id, connected=True)

    class Reconnected(AccountEvent):
        """A disconnected account connected again (same public type as the first connect)."""

        TOPIC = "provider_account.reconnected"
        SCHEMA_VERSION = 1

    class Updated(AccountEvent):
        TOPIC = "provider_account.updated"
        SCHEMA_VERSION = 1

    class Disconnected(AccountEvent):
        TOPIC = "provider_account.disconnected"
        SCHEMA_VERSION = 1

        def apply(self, aggregate: Any) -> None:
            aggregate.set_state(self.space_id, self.provider, self.account_id, connected=False)

    def set_state(self, space_id: str, provider: str, account_id: str, connected: bool) -> None:
        self.space_id = space_id
        self.provider = provider
        self.account_id = account_id
        self.connected = connected

    @classmethod
    def connect(cls, space_id: str, provider: str, account_id: str, actor: str) -> ProviderAccount:
        if provider not in ACCOUNT_PROVIDERS:
            raise InvalidAccount(
                f"accounts exist for {', '.join(ACCOUNT_PROVIDERS)}, not {provider!r}"
            )
        return cls._create(
            cls.Created,
            id=account_id_of(space_id, provider),
            space_id=space_id,
            provider=provider,
            account_id=account_id,
            actor=actor,
        )

    def change(self, account_id: str, actor: str) -> None:
        """New credentials (the secrets always count as a change, since events cannot see
        them): ``provider_account.updated``, or ``.reconnected`` after a disconnect."""
        kind = self.Updated if self.connected else self.Reconnected
        self.trigger_event(
            kind, space_id=self.space_id, provider=self.provider, account_id=account_id,
            actor=actor,
        )  # fmt: skip

    def disconnect(self, actor: str) -> None:
        if not self.connected:
            raise AccountDisconnected(f"no {self.provider} account is connected to this space")
        self.trigger_event(
            self.Disconnected, space_id=self.space_id, provider=self.provider,
            account_id=self.account_id, actor=actor,
        )  # fmt: skip
