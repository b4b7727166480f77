"""The PhoneNumber aggregate: a number a space can be reached at (and call from).

A number is an E.164 string (``+14155550100``), validated and normalised with the
``phonenumbers`` library, bought from or brought to a provider (``twilio``, ``voximplant``,
``sip``). It answers inbound calls with one agent (``inbound_agent_id``, *assigned*) and may be
one agent's caller id for outbound calls (``outbound_agent_id``). Every event carries the whole
state as of that event (event-carried state), so a consumer never needs earlier events.

Rules: a released number takes no further changes; an assigned number is not released (unassign
it first). That a number belongs to one space at a time, and that its agent is a live agent of
the same space, are checked by the command side (it sees the other aggregates and the claims).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import phonenumbers
from eventsourcing.domain import Aggregate

from domain.errors import DomainError

PROVIDERS = ("twilio", "voximplant", "sip")
CAPABILITIES = ("voice", "sms", "mms", "fax")
STATUSES = ("active", "released")
MAX_RAW_LENGTH = 64
E164_MAX_LENGTH = 16  # "+" and at most 15 digits


class InvalidPhoneNumber(DomainError):
    code = "invalid_phone_number"


class NumberReleased(DomainError):
    code = "number_released"


class NumberAssigned(DomainError):
    code = "number_assigned"


class InvalidNumber(DomainError):
    """A provider, capability or id that a number cannot have."""

    code = "invalid_number"


def normalise_e164(raw: str) -> str:
    """``raw`` as E.164 (``+`` and digits). Spaces, dashes, dots and parentheses are allowed in
    ``raw``; the country code is required (it must start with ``+``). ``InvalidPhoneNumber``
    says what is wrong otherwise."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhoneNumber("a phone number is required, in E.164 form such as +14155550100")
    text = raw.strip()
    if len(text) > MAX_RAW_LENGTH:
        raise InvalidPhoneNumber(f"{text[:20]!r}... is too long to be a phone number")
    if not text.startswith("+"):
        raise InvalidPhoneNumber(
            f"{text!r} has no country code: write it in E.164 form, starting with + "
            "(e.g. +14155550100)"
        )
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"{text!r} is not a phone number: {exc._msg}") from None
    if parsed.extension:
        raise InvalidPhoneNumber(f"{text!r} has an extension; give the number without it")
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhoneNumber(
            f"{text!r} has the wrong number of digits for country code +{parsed.country_code}"
        )
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(
            f"{text!r} is not a valid number in the numbering plan of "
            f"+{parsed.country_code}; check the digits"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def calling_code(e164: str) -> str:
    """The country calling code of an E.164 number (``"1"``, ``"44"``); ``""`` when it has
    none we know."""
    try:
        return str(phonenumbers.parse(e164, None).country_code or "")
    except phonenumbers.NumberParseException:
        return ""


def _uuid_text(value: UUID | str | None) -> str | None:
    return None if value is None else str(UUID(str(value)))


class NumberEvent(Aggregate.Event):
    """What every number event after ``number.provisioned`` carries: the number's whole state.
    Applying one sets that state (it runs again on every replay)."""

    space_id: str
    e164: str
    provider: str
    provider_id: str | None
    capabilities: list[str]
    inbound_agent_id: str | None
    outbound_agent_id: str | None
    trunk_id: str | None
    status: str
    actor: str

    def apply(self, aggregate: Any) -> None:
        aggregate.set_state(self.__dict__)


class PhoneNumber(Aggregate):
    TOPIC = "voxagent.PhoneNumber"

    class Created(Aggregate.Created):
        """number.provisioned: the aggregate's creation event."""

        TOPIC = "number.provisioned"
        SCHEMA_VERSION = 1
        space_id: str
        e164: str
        provider: str
        provider_id: str | None
        capabilities: list[str]
        inbound_agent_id: str | None
        outbound_agent_id: str | None
        trunk_id: str | None
        status: str
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.set_state(self.__dict__)

    class Assigned(NumberEvent):
        TOPIC = "number.assigned"
        SCHEMA_VERSION = 1

    class Unassigned(NumberEvent):
        TOPIC = "number.unassigned"
        SCHEMA_VERSION = 1

    class CallerIdSet(NumberEvent):
        TOPIC = "number.caller_id_set"
        SCHEMA_VERSION = 1

    class CallerIdCleared(NumberEvent):
        TOPIC = "number.caller_id_cleared"
        SCHEMA_VERSION = 1

    class Released(NumberEvent):
        TOPIC = "number.released"
        SCHEMA_VERSION = 1

    def set_state(self, state: dict[str, Any]) -> None:
        self.space_id: str = state["space_id"]
        self.e164: str = state["e164"]
        self.provider: str = state["provider"]
        self.provider_id: str | None = state["provider_id"]
        self.capabilities: list[str] = list(state["capabilities"])
        inbound, outbound = state["inbound_agent_id"], state["outbound_agent_id"]
        self.inbound_agent_id: UUID | None = UUID(inbound) if inbound else None
        self.outbound_agent_id: UUID | None = UUID(outbound) if outbound else None
        trunk = state["trunk_id"]
        self.trunk_id: UUID | None = UUID(trunk) if trunk else None
        self.status: str = state["status"]

    @classmethod
    def provision(
        cls,
        *,
        space_id: str,
        e164: str,
        provider: str,
        actor: str,
        provider_id: str | None = None,
        capabilities: Sequence[str] = ("voice",),
        trunk_id: UUID | None = None,
        number_id: UUID | None = None,
    ) -> PhoneNumber:
        if provider not in PROVIDERS:
            raise InvalidNumber(f"provider must be one of {', '.join(PROVIDERS)}; got {provider!r}")
        unknown = sorted(set(capabilities) - set(CAPABILITIES))
        if unknown:
            raise InvalidNumber(
                f"unknown capabilities {unknown}; a number can have {', '.join(CAPABILITIES)}"
            )
        if trunk_id is not None and provider != "sip":
            raise InvalidNumber("only a sip number reaches us through a trunk; omit trunk_id")
        return cls._create(
            cls.Created,
            id=number_id,
            space_id=space_id,
            e164=normalise_e164(e164),
            provider=provider,
            provider_id=provider_id,
            capabilities=sorted(set(capabilities)),
            inbound_agent_id=None,
            outbound_agent_id=None,
            trunk_id=_uuid_text(trunk_id),
            status="active",
            actor=actor,
        )

    # -- the whole state, as every event carries it ----------------------------------------
    @property
    def state(self) -> dict[str, Any]:
        return {
            "space_id": self.space_id,
            "e164": self.e164,
            "provider": self.provider,
            "provider_id": self.provider_id,
            "capabilities": list(self.capabilities),
            "inbound_agent_id": _uuid_text(self.inbound_agent_id),
            "outbound_agent_id": _uuid_text(self.outbound_agent_id),
            "trunk_id": _uuid_text(self.trunk_id),
            "status": self.status,
        }

    @property
    def released(self) -> bool:
        return self.status == "released"

    # -- commands: each returns False when nothing changed ----------------------------------
    def assign(self, agent_id: UUID, actor: str) -> bool:
        """Answer inbound calls with ``agent_id`` (the caller checked it is a live agent of
        this number's space)."""
        self._ensure_active("be assigned")
        if self.inbound_agent_id == agent_id:
            return False
        self._change(self.Assigned, actor, inbound_agent_id=_uuid_text(agent_id))
        return True

    def unassign(self, actor: str) -> bool:
        self._ensure_active("be unassigned")
        if self.inbound_agent_id is None:
            return False
        self._change(self.Unassigned, actor, inbound_agent_id=None)
        return True

    def set_caller_id(self, agent_id: UUID, actor: str) -> bool:
        """``agent_id`` places its outbound calls from this number."""
        self._ensure_active("become a caller id")
        if self.outbound_agent_id == agent_id:
            return False
        self._change(self.CallerIdSet, actor, outbound_agent_id=_uuid_text(agent_id))
        return True

    def clear_caller_id(self, actor: str) -> bool:
        self._ensure_active("change its caller id")
        if self.outbound_agent_id is None:
            return False
        self._change(self.CallerIdCleared, actor, outbound_agent_id=None)
        return True

    def release(self, actor: str) -> None:
        self._ensure_active("be released")
        if self.inbound_agent_id is not None:
            raise NumberAssigned(
                f"number {self.e164} answers calls with agent {self.inbound_agent_id}; "
                "unassign it first, then release it"
            )
        self._change(self.Released, actor, outbound_agent_id=None, status="released")

    def _change(self, event_class: type[NumberEvent], actor: str, **changes: Any) -> None:
        self.trigger_event(event_class, **{**self.state, **changes, "actor": actor})

    def _ensure_active(self, what: str) -> None:
        if self.released:
            raise NumberReleased(
                f"number {self.e164} ({self.id}) was released and cannot {what}; "
                "provision it again to use it"
            )


__all__ = [
    "InvalidPhoneNumber",
    "NumberAssigned",
    "NumberReleased",
    "PhoneNumber",
    "normalise_e164",
]
