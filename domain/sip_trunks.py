"""The SipTrunk aggregate: a carrier or PBX that reaches our SIP endpoint, and that we call out
through.

Inbound, a trunk is recognised by its source address (``allowed_addresses``, CIDR blocks) and/or
digest credentials (``inbound.username``; the password is a side record). Outbound, calls go to
``outbound.address`` (``host[:port]``) over ``udp`` or ``tcp``, with digest credentials when the
carrier asks (``outbound.username``; password apart). Passwords never enter an event: the
command side stores them in the same transaction. Every event carries the whole public state.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from eventsourcing.domain import Aggregate
from pydantic import ConfigDict, Field, ValidationError, field_validator

from domain.errors import DomainError
from domain.text import Storable

MAX_ADDRESSES = 64
_HOST = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)(?::(\d{1,5}))?$"
)
_USERNAME = r"^[A-Za-z0-9_.!~*'()&=+$,;?/%-]{1,128}$"


class InvalidTrunk(DomainError):
    code = "invalid_trunk"


class TrunkDeleted(DomainError):
    code = "trunk_not_found"


class InboundSpec(Storable):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_addresses: list[str] = Field(
        default_factory=list,
        max_length=MAX_ADDRESSES,
        description="CIDR blocks (or single addresses) INVITEs may come from. With neither "
        "addresses nor a username, the trunk takes no inbound calls.",
    )
    username: str | None = Field(
        None, pattern=_USERNAME, description="Digest user the trunk authenticates with."
    )

    @field_validator("allowed_addresses")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR block") from None
        return sorted(set(out))


class OutboundSpec(Storable):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(max_length=260, description="`host[:port]` of the carrier's SIP proxy.")
    transport: Literal["udp", "tcp"] = "udp"
    username: str | None = Field(None, pattern=_USERNAME)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        found = _HOST.match(value.strip())
        if not found or (found.group(1) and not 0 < int(found.group(1)) < 65536):
            raise ValueError(f"{value!r} is not host[:port] (e.g. sip.example.com:5060)")
        return value.strip()


class TrunkSpec(Storable):
    """A trunk's public configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    inbound: InboundSpec = Field(default_factory=InboundSpec)
    outbound: OutboundSpec | None = None

    def as_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def validated_trunk(data: dict[str, Any]) -> TrunkSpec:
    try:
        return TrunkSpec.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "trunk"
            parts.append(f"{where}: {err.get('msg')}")
        raise InvalidTrunk("invalid SIP trunk: " + "; ".join(parts)) from exc


class TrunkEvent(Aggregate.Event):
    space_id: str
    trunk: dict[str, Any]
    actor: str

    def apply(self, aggregate: Any) -> None:
        aggregate.set_state(self.space_id, self.trunk, deleted=False)


class SipTrunk(Aggregate):
    TOPIC = "voxagent.SipTrunk"

    class Created(Aggregate.Created):
        TOPIC = "trunk.created"
        SCHEMA_VERSION = 1
        space_id: str
        trunk: dict[str, Any]
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.set_state(self.space_id, self.trunk, deleted=False)

    class Updated(TrunkEvent):
        TOPIC = "trunk.updated"
        SCHEMA_VERSION = 1
        changed: list[str]

    class Deleted(TrunkEvent):
        TOPIC = "trunk.deleted"
        SCHEMA_VERSION = 1

        def apply(self, aggregate: Any) -> None:
            aggregate.set_state(self.space_id, self.trunk, deleted=True)

    def set_state(self, space_id: str, trunk: dict[str, Any], deleted: bool) -> None:
        self.space_id = space_id
        self.spec = TrunkSpec.model_validate(trunk)
        self.deleted = deleted

    @classmethod
    def create(cls, space_id: str, spec: TrunkSpec, actor: str) -> SipTrunk:
        return cls._create(cls.Created, space_id=space_id, trunk=spec.as_data(), actor=actor)

    def update(self, patch: dict[str, Any], actor: str) -> list[str]:
        """Apply a JSON merge of ``patch`` (``inbound``/``outbound`` replaced as a whole, or
        ``outbound: null``); the names of the fields that changed (none: no event)."""
        self._ensure_exists()
        unknown = set(patch) - set(TrunkSpec.model_fields)
        if unknown:
            raise InvalidTrunk(f"invalid SIP trunk: unknown fields {sorted(unknown)}")
        old = self.spec.as_data()
        new = validated_trunk({**old, **patch}).as_data()
        changed = sorted(k for k, v in new.items() if old.get(k) != v)
        if changed:
            self.trigger_event(
                self.Updated, space_id=self.space_id, trunk=new, changed=changed, actor=actor
            )
        return changed

    def delete(self, actor: str) -> None:
        self._ensure_exists()
        self.trigger_event(
            self.Deleted, space_id=self.space_id, trunk=self.spec.as_data(), actor=actor
        )

    def _ensure_exists(self) -> None:
        if self.deleted:
            raise TrunkDeleted(f"SIP trunk {self.id} was deleted")
