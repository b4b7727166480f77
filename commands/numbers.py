"""Write side of numbers, SIP trunks and provider accounts: one eventsourcing Application.

Each command loads, checks that the caller's space owns the aggregate, calls one aggregate
method and saves (optimistic concurrency, Idempotency-Key) with its side records in the same
transaction:

- ``NumberClaim`` / ``ClaimReleased``: the ``number_claims`` table holds each active E.164 number
  once (primary key). Provisioning inserts the claim with the ``number.provisioned`` event, so a
  number active in another space (or twice in one) is refused atomically (``NumberTaken``),
  never by reading a read model; releasing deletes it with ``number.released``.
- ``TrunkSecretRecord`` and ``AccountSecretRecord``: trunk passwords and provider credentials,
  never in an event, never returned; read back only by ``trunk_secret`` and ``credentials``
  (the provider adapters and the SIP entry point).

``route(e164)`` is the lookup of every inbound entry point: it reads the claims and the
aggregate (the write side), so a number assigned a moment ago routes at once.

``record_refusal`` records a call refused at the door of one of the space's numbers
(``number.call_refused``, a ``RefusedCall`` aggregate per call, see ``domain/refused_calls.py``):
once per provider call id, whatever the provider retries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from pydantic import Field, field_validator, model_validator

from commands.agents import Actor, ConcurrentModification, VersionMismatch
from commands.group_commit import GroupCommit
from commands.idempotency import Key
from commands.signals import iso_ms
from commands.telephony import Capability, ProviderCredentials, ProviderName
from commands.writes import IdempotentWrites, Written
from domain.numbers import Moment
from domain.phone_numbers import CAPABILITIES, InvalidPhoneNumber, PhoneNumber, normalise_e164
from domain.provider_accounts import ACCOUNT_PROVIDERS, ProviderAccount, account_id_of
from domain.refused_calls import MAX_PROVIDER_CALL_ID, RefusedCall, refusal_id
from domain.sip_trunks import InvalidTrunk, SipTrunk, TrunkSpec
from domain.text import Storable, max_json_bytes


class NumberNotFound(Exception):
    code = "number_not_found"


class NumberTaken(Exception):
    code = "number_taken"


class TrunkNotFound(Exception):
    code = "trunk_not_found"


class TrunkInUse(Exception):
    code = "trunk_in_use"


class AccountNotFound(Exception):
    code = "provider_account_not_found"


# -- side records (saved in the same transaction as the command's events) ------------------
@dataclass(frozen=True)
class NumberClaim:
    """``e164`` is active as ``number_id`` of ``space_id`` (unique on ``e164``)."""

    e164: str
    number_id: UUID
    space_id: str
    provider: str
    trunk_id: UUID | None


@dataclass(frozen=True)
class ClaimReleased:
    e164: str
    number_id: UUID


@dataclass(frozen=True)
class TrunkSecretRecord:
    """A trunk's digest passwords as of now (a missing one: none)."""

    trunk_id: UUID
    inbound_password: str | None = field(repr=False)
    outbound_password: str | None = field(repr=False)


@dataclass(frozen=True)
class TrunkSecretDropped:
    trunk_id: UUID


@dataclass(frozen=True)
class AccountSecretRecord:
    account_id: UUID  # the ProviderAccount aggregate's id
    secrets: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class AccountSecretDropped:
    account_id: UUID


class NumbersStore(Protocol):
    """What the recorder keeps beside the events (adapters/postgres/numbers_recorder.py)."""

    def claimed(self, e164: str) -> UUID | None: ...

    def trunk_in_use(self, trunk_id: UUID) -> bool: ...

    def trunk_passwords(self, trunk_id: UUID) -> tuple[str | None, str | None] | None: ...

    def account_secrets(self, account_id: UUID) -> dict[str, str] | None: ...


# -- commands ----------------------------------------------------------------------------
NumberProviderName = Literal["twilio", "voximplant", "sip"]
AccountProviderName = Literal["twilio", "voximplant"]


class ProvisionNumber(Storable):
    e164: str = Field(max_length=64, description="E.164, e.g. `+14155550100`.")
    provider: NumberProviderName
    provider_id: str | None = Field(None, min_length=1, max_length=128)
    trunk_id: UUID | None = None
    capabilities: list[Capability] = Field(
        default_factory=lambda: list[Capability](["voice"]), max_length=len(CAPABILITIES)
    )


class AssignNumber(Storable):
    number_id: UUID
    agent_id: UUID
    expected_version: int | None = None


class UnassignNumber(Storable):
    number_id: UUID
    expected_version: int | None = None


class SetCallerId(Storable):
    number_id: UUID
    agent_id: UUID | None
    expected_version: int | None = None


class ReleaseNumber(Storable):
    number_id: UUID
    expected_version: int | None = None


RefusalReason = Literal[
    "number_unassigned", "number_released", "agent_unavailable", "provider_mismatch",
    "trunk_unauthenticated",
]  # fmt: skip


class RecordRefusal(Storable):
    """A call to ``number_id`` was refused at the door (the caller heard a polite refusal)."""

    number_id: UUID
    provider: NumberProviderName = Field(description="The provider that brought the call.")
    caller: str | None = Field(None, max_length=64, description="The caller id, as given.")
    reason: RefusalReason
    provider_call_id: str = Field(min_length=1, max_length=MAX_PROVIDER_CALL_ID)
    at: Moment


Password = Annotated[str, Field(min_length=8, max_length=256)]


class CreateTrunk(Storable):
    spec: TrunkSpec
    inbound_password: Password | None = None
    outbound_password: Password | None = None


class UpdateTrunk(Storable):
    trunk_id: UUID
    patch: Annotated[dict[str, Any], max_json_bytes(16 * 1024)]
    inbound_password: Password | None = None
    outbound_password: Password | None = None
    expected_version: int | None = None


class DeleteTrunk(Storable):
    trunk_id: UUID
    expected_version: int | None = None


# what each provider's account needs among its secrets: one of these sets of names
ACCOUNT_SECRETS: dict[str, tuple[frozenset[str], ...]] = {
    "twilio": (frozenset({"auth_token"}), frozenset({"api_key_sid", "api_key_secret"})),
    "voximplant": (frozenset({"api_key"}), frozenset({"key_id", "private_key"})),
}
SecretName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class ConnectAccount(Storable):
    provider: AccountProviderName
    account_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")
    secrets: dict[SecretName, Annotated[str, Field(min_length=1, max_length=8192)]] = Field(
        min_length=1, max_length=8
    )

    @model_validator(mode="after")
    def _enough(self) -> ConnectAccount:
        options = ACCOUNT_SECRETS[self.provider]
        if not any(option <= set(self.secrets) for option in options):
            wanted = " or ".join("+".join(sorted(o)) for o in options)
            raise ValueError(f"a {self.provider} account needs the secrets {wanted}")
        return self


class DisconnectAccount(Storable):
    provider: AccountProviderName

    @field_validator("provider")
    @classmethod
    def _known(cls, value: str) -> str:
        assert value in ACCOUNT_PROVIDERS
        return value


# -- answers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    id: UUID
    version: int
    position: int | None
    aggregate: Any = None
    replayed: bool = False


@dataclass(frozen=True)
class NumberRoute:
    """Where a call to ``e164`` goes (``agent_id`` None: unassigned)."""

    number_id: UUID
    space_id: str
    e164: str
    provider: str
    agent_id: UUID | None
    trunk_id: UUID | None
    status: str


@dataclass(frozen=True)
class TrunkSecrets:
    """A trunk's digest credentials, both directions (None: that direction has none)."""

    trunk_id: UUID
    space_id: str
    inbound_username: str | None
    inbound_password: str | None = field(repr=False)
    outbound_username: str | None
    outbound_password: str | None = field(repr=False)


AgentLookup = Callable[[Actor, UUID], Any]  # raises AgentNotFound outside the space


class NumbersApplication(Application[UUID]):
    name = "numbers"

    def __init__(
        self, env: dict[str, str] | None = None, agent_lookup: AgentLookup | None = None
    ) -> None:
        super().__init__(env)
        self._writes = IdempotentWrites(self, GroupCommit(self.save), self._conflict)
        self._agent_lookup = agent_lookup

    @property
    def store(self) -> NumbersStore:
        recorder: Any = self.recorder
        return recorder  # type: ignore[no-any-return]

    # -- numbers ---------------------------------------------------------------------------
    def replayed(self, actor: Actor, idempotency_key: Key, command: str) -> Result | None:
        """The first result of a request with ``idempotency_key`` (a ``RequestKey``: the
        request's own fingerprint), before doing anything with side effects outside the store
        (buying a number at a provider)."""
        written = self._writes.replay(actor.space_id, idempotency_key, command, None)
        if written is None:
            return None
        return Result(written.id, written.version, written.position, written.aggregate, True)

    def provision_number(
        self,
        actor: Actor,
        cmd: ProvisionNumber,
        idempotency_key: Key = None,
        command: str = "provision_number",
    ) -> Result:
        """A number the space already has (bought by the buy route, or a SIP number)."""

        def apply() -> tuple[PhoneNumber, list[Any]]:
            if cmd.trunk_id is not None:
                self._trunk(actor, cmd.trunk_id)
            number = PhoneNumber.provision(
                space_id=actor.space_id, e164=cmd.e164, provider=cmd.provider,
                actor=actor.subject, provider_id=cmd.provider_id,
                capabilities=cmd.capabilities, trunk_id=cmd.trunk_id,
            )  # fmt: skip
            claim = NumberClaim(
                number.e164, number.id, actor.space_id, number.provider, number.trunk_id
            )
            return number, [claim]

        return self._command(actor, cmd, idempotency_key, command, apply)

    def assign_number(self, actor: Actor, cmd: AssignNumber, idempotency_key: Key = None) -> Result:
        def apply() -> tuple[Any, list[Any]]:
            number = self._number(actor, cmd.number_id, cmd.expected_version)
            self._live_agent(actor, cmd.agent_id)
            return self._changed(number, number.assign(cmd.agent_id, actor.subject))

        return self._command(actor, cmd, idempotency_key, "assign_number", apply)

    def unassign_number(
        self, actor: Actor, cmd: UnassignNumber, idempotency_key: Key = None
    ) -> Result:
        def apply() -> tuple[Any, list[Any]]:
            number = self._number(actor, cmd.number_id, cmd.expected_version)
            return self._changed(number, number.unassign(actor.subject))

        return self._command(actor, cmd, idempotency_key, "unassign_number", apply)

    def set_caller_id(self, actor: Actor, cmd: SetCallerId, idempotency_key: Key = None) -> Result:
        def apply() -> tuple[Any, list[Any]]:
            number = self._number(actor, cmd.number_id, cmd.expected_version)
            if cmd.agent_id is None:
                return self._changed(number, number.clear_caller_id(actor.subject))
            self._live_agent(actor, cmd.agent_id)
            return self._changed(number, number.set_caller_id(cmd.agent_id, actor.subject))

        return self._command(actor, cmd, idempotency_key, "set_caller_id", apply)

    def release_number(
        self, actor: Actor, cmd: ReleaseNumber, idempotency_key: Key = None
    ) -> Result:
        def apply() -> tuple[PhoneNumber, list[Any]]:
            number = self._number(actor, cmd.number_id, cmd.expected_version)
            number.release(actor.subject)
            return number, [ClaimReleased(number.e164, number.id)]

        return self._command(actor, cmd, idempotency_key, "release_number", apply)

    def get_number(self, actor: Actor, number_id: UUID) -> PhoneNumber:
        """The number (released ones included); ``NumberNotFound`` outside the space."""
        try:
            number: PhoneNumber = self.repository.get(number_id)
        except AggregateNotFoundError:
            raise NumberNotFound(f"number {number_id} not found") from None
        if not isinstance(number, PhoneNumber) or number.space_id != actor.space_id:
            raise NumberNotFound(f"number {number_id} not found")
        return number

    def route(self, e164: str) -> NumberRoute | None:
        """Where a call to ``e164`` goes; None for a number that is unknown or released.
        ``e164`` may lack its ``+`` (a SIP request URI's user part)."""
        normalised = _normalised_or_none(e164)
        if normalised is None:
            return None
        number_id = self.store.claimed(normalised)
        if number_id is None:
            return None
        try:
            number: PhoneNumber = self.repository.get(number_id)
        except AggregateNotFoundError:
            return None
        if number.released:
            return None
        return NumberRoute(
            number_id=number.id, space_id=number.space_id, e164=number.e164,
            provider=number.provider, agent_id=number.inbound_agent_id,
            trunk_id=number.trunk_id, status=number.status,
        )  # fmt: skip

    def record_refusal(self, actor: Actor, cmd: RecordRefusal) -> Result:
        """Record that a call to one of the space's numbers (released ones included) was
        refused; ``NumberNotFound`` outside the space. The provider's call id makes it
        idempotent: a retried webhook answers the first record (``replayed``)."""
        number = self.get_number(actor, cmd.number_id)
        existing = self._refusal(number.id, cmd.provider, cmd.provider_call_id)
        if existing is not None:
            return existing
        refusal = RefusedCall.record(
            space_id=number.space_id, number_id=number.id, e164=number.e164,
            provider=cmd.provider, caller=cmd.caller, reason=cmd.reason,
            provider_call_id=cmd.provider_call_id, at=iso_ms(cmd.at),
        )  # fmt: skip
        try:
            written = self._writes.save(actor.space_id, refusal, None, "record_refusal", None)
        except ConcurrentModification:  # the same call, recorded by a concurrent retry
            existing = self._refusal(number.id, cmd.provider, cmd.provider_call_id)
            if existing is None:
                raise
            return existing
        return Result(written.id, written.version, written.position, written.aggregate)

    def _refusal(self, number_id: UUID, provider: str, provider_call_id: str) -> Result | None:
        ident = refusal_id(number_id, provider, provider_call_id)
        try:
            refusal: RefusedCall = self.repository.get(ident)
        except AggregateNotFoundError:
            return None
        recorder: Any = self.recorder
        position = recorder.position_of(refusal.id, refusal.version)
        return Result(refusal.id, refusal.version, position, refusal, replayed=True)

    # -- SIP trunks -------------------------------------------------------------------------
    def create_trunk(self, actor: Actor, cmd: CreateTrunk, idempotency_key: Key = None) -> Result:
        def apply() -> tuple[SipTrunk, list[Any]]:
            _check_passwords(cmd.spec, cmd.inbound_password, cmd.outbound_password)
            trunk = SipTrunk.create(actor.space_id, cmd.spec, actor.subject)
            record = TrunkSecretRecord(trunk.id, cmd.inbound_password, cmd.outbound_password)
            return trunk, [record]

        return self._command(actor, cmd, idempotency_key, "create_trunk", apply)

    def update_trunk(self, actor: Actor, cmd: UpdateTrunk, idempotency_key: Key = None) -> Result:
        def apply() -> tuple[Any, list[Any]]:
            trunk = self._trunk(actor, cmd.trunk_id, cmd.expected_version)
            inbound, outbound = self.store.trunk_passwords(trunk.id) or (None, None)
            new_inbound = cmd.inbound_password or inbound
            new_outbound = cmd.outbound_password or outbound
            changed = trunk.update(cmd.patch, actor.subject)
            spec: TrunkSpec = trunk.spec
            new_inbound = new_inbound if spec.inbound.username else None
            new_outbound = new_outbound if spec.outbound and spec.outbound.username else None
            _check_passwords(spec, new_inbound, new_outbound)
            if (new_inbound, new_outbound) == (inbound, outbound) and not changed:
                return self._writes.unchanged(trunk), []
            if not changed:  # only a password changed: the event says which side did
                trunk.trigger_event(
                    SipTrunk.Updated, space_id=trunk.space_id, trunk=spec.as_data(),
                    changed=[n for n, new, old in (
                        ("inbound_password", new_inbound, inbound),
                        ("outbound_password", new_outbound, outbound),
                    ) if new != old], actor=actor.subject,
                )  # fmt: skip
            return trunk, [TrunkSecretRecord(trunk.id, new_inbound, new_outbound)]

        return self._command(actor, cmd, idempotency_key, "update_trunk", apply)

    def delete_trunk(self, actor: Actor, cmd: DeleteTrunk, idempotency_key: Key = None) -> Result:
        def apply() -> tuple[SipTrunk, list[Any]]:
            trunk = self._trunk(actor, cmd.trunk_id, cmd.expected_version)
            if self.store.trunk_in_use(trunk.id):
                raise TrunkInUse(f"SIP trunk {trunk.id} carries active numbers; release them first")
            trunk.delete(actor.subject)
            return trunk, [TrunkSecretDropped(trunk.id)]

        return self._command(actor, cmd, idempotency_key, "delete_trunk", apply)

    def get_trunk(self, actor: Actor, trunk_id: UUID) -> SipTrunk:
        return self._trunk(actor, trunk_id)

    def trunk_of(self, trunk_id: UUID) -> SipTrunk | None:
        """Any space's trunk (for the SIP entry point, trusted infrastructure); None when
        unknown or deleted."""
        try:
            trunk: SipTrunk = self.repository.get(trunk_id)
        except AggregateNotFoundError:
            return None
        return trunk if isinstance(trunk, SipTrunk) and not trunk.deleted else None

    def trunk_secret(self, trunk_id: UUID) -> TrunkSecrets | None:
        """The trunk's digest credentials (both directions), or None when it is unknown or
        deleted. Never return these over the API."""
        trunk = self.trunk_of(trunk_id)
        if trunk is None:
            return None
        inbound, outbound = self.store.trunk_passwords(trunk.id) or (None, None)
        spec: TrunkSpec = trunk.spec
        return TrunkSecrets(
            trunk_id=trunk.id, space_id=trunk.space_id,
            inbound_username=spec.inbound.username, inbound_password=inbound,
            outbound_username=spec.outbound.username if spec.outbound else None,
            outbound_password=outbound,
        )  # fmt: skip

    # -- provider accounts -------------------------------------------------------------------
    def connect_account(
        self, actor: Actor, cmd: ConnectAccount, idempotency_key: Key = None
    ) -> Result:
        """Connect the space's account at ``cmd.provider``, or replace its credentials."""

        def apply() -> tuple[ProviderAccount, list[Any]]:
            account = self._account(actor, cmd.provider)
            if account is None:
                account = ProviderAccount.connect(
                    actor.space_id, cmd.provider, cmd.account_id, actor.subject
                )
            else:
                account.change(cmd.account_id, actor.subject)
            return account, [AccountSecretRecord(account.id, dict(cmd.secrets))]

        return self._command(actor, cmd, idempotency_key, "connect_account", apply)

    def disconnect_account(
        self, actor: Actor, cmd: DisconnectAccount, idempotency_key: Key = None
    ) -> Result:
        def apply() -> tuple[ProviderAccount, list[Any]]:
            account = self._account(actor, cmd.provider)
            if account is None or not account.connected:
                raise AccountNotFound(f"no {cmd.provider} account is connected to your space")
            account.disconnect(actor.subject)
            return account, [AccountSecretDropped(account.id)]

        return self._command(actor, cmd, idempotency_key, "disconnect_account", apply)

    def get_account(self, actor: Actor, provider: str) -> ProviderAccount:
        account = self._account(actor, provider)
        if account is None or not account.connected:
            raise AccountNotFound(f"no {provider} account is connected to your space")
        return account

    def credentials(self, space_id: str, provider: str) -> ProviderCredentials | None:
        """The space's credentials at ``provider`` for the provider adapters; None when no
        account is connected. Never log or return the secrets."""
        account = self._account(Actor(space_id=space_id, subject="system"), provider)
        if account is None or not account.connected:
            return None
        secrets = self.store.account_secrets(account.id)
        if secrets is None:
            return None
        return ProviderCredentials(
            provider=cast(ProviderName, account.provider),
            account_id=account.account_id,
            secrets=secrets,
        )

    # -- helpers ----------------------------------------------------------------------------
    def _number(self, actor: Actor, number_id: UUID, expected: int | None) -> PhoneNumber:
        number = self.get_number(actor, number_id)
        _check_version(number, expected, f"number {number_id}")
        return number

    def _trunk(self, actor: Actor, trunk_id: UUID, expected: int | None = None) -> SipTrunk:
        trunk = self.trunk_of(trunk_id)
        if trunk is None or trunk.space_id != actor.space_id:
            raise TrunkNotFound(f"SIP trunk {trunk_id} not found")
        _check_version(trunk, expected, f"SIP trunk {trunk_id}")
        return trunk

    def _account(self, actor: Actor, provider: str) -> ProviderAccount | None:
        try:
            account: ProviderAccount = self.repository.get(account_id_of(actor.space_id, provider))
        except AggregateNotFoundError:
            return None
        return account

    def _live_agent(self, actor: Actor, agent_id: UUID) -> None:
        """``AgentNotFound`` outside the space, ``AgentArchived`` for an archived agent."""
        if self._agent_lookup is None:
            raise RuntimeError("NumbersApplication needs an agent_lookup to assign agents")
        self._agent_lookup(actor, agent_id).ensure_accepts_calls()

    def _changed(self, aggregate: Any, changed: bool) -> tuple[Any, list[Any]]:
        return (aggregate if changed else self._writes.unchanged(aggregate)), []

    def _command(
        self, actor: Actor, cmd: Storable, key: Key, command: str,
        apply: Callable[[], tuple[Any, list[Any]]],
    ) -> Result:  # fmt: skip
        """Replay the key's first result, or run ``apply`` and save what it changed with its
        side records."""
        payload = cmd.model_dump(mode="json")
        written = self._writes.replay(actor.space_id, key, command, payload)
        if written is None:
            outcome, records = apply()
            if isinstance(outcome, Written):
                written = outcome
            else:
                written = self._writes.save(actor.space_id, outcome, key, command, payload, records)
        return Result(written.id, written.version, written.position, written.aggregate,
                      written.replayed)  # fmt: skip

    def _conflict(self, aggregate: Any) -> Exception:
        """Why a save collided: the number's claim (taken), else a concurrent change."""
        if isinstance(aggregate, PhoneNumber) and aggregate.version == 1:
            holder = self.store.claimed(aggregate.e164)
            if holder is not None and holder != aggregate.id:
                return NumberTaken(
                    f"{aggregate.e164} is already provisioned (in this or another space); "
                    "release it there first"
                )
        what = type(aggregate).__name__
        return ConcurrentModification(
            f"{what} {aggregate.id} was changed concurrently; reload it and retry"
        )


def _check_version(aggregate: Any, expected: int | None, what: str) -> None:
    if expected is not None and aggregate.version != expected:
        raise VersionMismatch(
            f"{what} is at version {aggregate.version}, not {expected}; "
            "reload it and retry with the current version in If-Match"
        )


def _check_passwords(spec: TrunkSpec, inbound: str | None, outbound: str | None) -> None:
    if spec.inbound.username and not inbound:
        raise InvalidTrunk("invalid SIP trunk: inbound.username needs an inbound_password")
    if spec.outbound and spec.outbound.username and not outbound:
        raise InvalidTrunk("invalid SIP trunk: outbound.username needs an outbound_password")
    if inbound and not spec.inbound.username:
        raise InvalidTrunk("invalid SIP trunk: inbound_password needs inbound.username")
    if outbound and not (spec.outbound and spec.outbound.username):
        raise InvalidTrunk("invalid SIP trunk: outbound_password needs outbound.username")


def _normalised_or_none(raw: str) -> str | None:
    text = raw.strip() if isinstance(raw, str) else ""
    candidates = [text] if text.startswith("+") else [text, "+" + text]
    for candidate in candidates:
        try:
            return normalise_e164(candidate)
        except InvalidPhoneNumber:
            continue
    return None
