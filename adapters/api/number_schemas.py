"""Bodies and answers of the numbers, trunks and provider-accounts routes. Secrets are
write-only: no answer model has a field that could carry one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from commands.numbers import Password, SecretName
from commands.telephony import AvailableNumber, Capability
from domain.sip_trunks import InboundSpec, OutboundSpec
from domain.text import Storable

NumberProviderName = Literal["twilio", "voximplant", "sip"]
BuyProviderName = Literal["twilio", "voximplant"]


class NumberProvision(Storable):
    model_config = ConfigDict(extra="forbid")

    e164: str = Field(max_length=64, description="E.164, e.g. `+14155550100`.")
    provider: NumberProviderName
    provider_id: str | None = Field(None, min_length=1, max_length=128)
    trunk_id: UUID | None = Field(None, description="For a `sip` number: its trunk.")
    capabilities: list[Capability] = Field(
        default_factory=lambda: list[Capability](["voice"]), max_length=4
    )


class NumberBuy(Storable):
    model_config = ConfigDict(extra="forbid")

    provider: BuyProviderName
    e164: str = Field(max_length=64, description="A number `search` offered.")
    agent_id: UUID | None = Field(None, description="Assign the number to this agent at once.")


class AgentRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: UUID


class CallerIdBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: UUID | None = Field(description="The agent calling out from it; null to clear.")


class NumberPublic(BaseModel):
    id: UUID
    e164: str
    provider: NumberProviderName
    provider_id: str | None
    capabilities: list[str]
    inbound_agent_id: UUID | None = Field(description="The agent answering calls to it.")
    outbound_agent_id: UUID | None = Field(description="The agent calling out from it.")
    trunk_id: UUID | None
    status: Literal["active", "released"]
    version: int
    created_at: datetime
    updated_at: datetime
    released_at: datetime | None = None


class NumberPage(BaseModel):
    items: list[NumberPublic]
    total: int
    limit: int
    offset: int


class RefusedCallPublic(BaseModel):
    id: UUID = Field(description="The refusal (one per provider call).")
    number_id: UUID
    e164: str = Field(description="The number dialed.")
    provider: NumberProviderName = Field(description="The provider that brought the call.")
    caller: str | None = Field(description="The caller id, as the provider gave it.")
    reason: Literal[
        "number_unassigned", "number_released", "agent_unavailable", "provider_mismatch",
        "trunk_unauthenticated",
    ]  # fmt: skip
    provider_call_id: str = Field(description="Twilio's CallSid, VoxImplant's session id...")
    at: datetime = Field(description="When the call was refused.")


class RefusedCallPage(BaseModel):
    items: list[RefusedCallPublic]
    total: int
    limit: int
    offset: int


class SearchResult(BaseModel):
    items: list[AvailableNumber]


class BuyResult(NumberPublic):
    pass


class LookupResult(BaseModel):
    number_id: UUID
    e164: str
    provider: str
    agent_id: UUID | None = Field(description="Who answers it; null while unassigned.")
    trunk_id: UUID | None
    status: str


class AccountBody(Storable):
    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$",
        description="Twilio's account SID (`AC...`), VoxImplant's account id.",
    )  # fmt: skip
    secrets: dict[SecretName, str] = Field(
        min_length=1, max_length=8,
        description="Write-only. Twilio: `auth_token`, or `api_key_sid` + `api_key_secret`. "
        "VoxImplant: `api_key`, or `key_id` + `private_key`.",
    )  # fmt: skip


class AccountPublic(BaseModel):
    provider: BuyProviderName
    account_id: str
    connected: bool
    version: int
    updated_at: datetime


class TrunkCreate(Storable):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    inbound: InboundSpec = Field(default_factory=InboundSpec)
    outbound: OutboundSpec | None = None
    inbound_password: Password | None = Field(None, description="Write-only digest password.")
    outbound_password: Password | None = Field(None, description="Write-only digest password.")


class TrunkPatch(Storable):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=128)
    inbound: InboundSpec | None = None
    outbound: OutboundSpec | None = None
    inbound_password: Password | None = None
    outbound_password: Password | None = None


class TrunkPublic(BaseModel):
    id: UUID
    name: str
    inbound: dict[str, Any]
    outbound: dict[str, Any] | None
    version: int
    created_at: datetime
    updated_at: datetime


class TrunkPage(BaseModel):
    items: list[TrunkPublic]
    total: int
    limit: int
    offset: int
