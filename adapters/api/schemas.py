"""HTTP schemas for agents: Create, Patch and Public, kept apart (STYLE)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.agent_config import MAX_CONFIG_BYTES, AgentConfig
from domain.text import Storable, max_json_bytes

PatchObject = Annotated[dict[str, Any], max_json_bytes(MAX_CONFIG_BYTES)]


class AgentCreate(AgentConfig):
    """The configuration of a new agent (every field but ``name`` has a default)."""


class AgentPatch(Storable):
    """A JSON merge patch (RFC 7396) of an agent's configuration: nested objects merge,
    ``null`` restores a field's default, lists (``tools``) are replaced whole."""

    model_config = ConfigDict(extra="forbid")

    # the merged configuration is validated as a whole (AgentConfig); these bound the patch
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)
    system_prompt: str | None = Field(None, max_length=100_000)
    first_message: str | None = Field(None, max_length=2000)
    language: str | None = Field(None, max_length=35)
    stt: PatchObject | None = None
    llm: PatchObject | None = None
    tts: PatchObject | None = None
    tools: Annotated[list[dict[str, Any]], max_json_bytes(MAX_CONFIG_BYTES)] | None = Field(
        None, max_length=64
    )
    webhooks: PatchObject | None = None
    max_call_duration_seconds: int | None = None
    silence_timeout_seconds: float | None = None
    silence_prompt: str | None = Field(None, max_length=500)
    variables: Annotated[dict[str, str], max_json_bytes(MAX_CONFIG_BYTES)] | None = None
    transfer_targets: Annotated[list[dict[str, Any]], max_json_bytes(MAX_CONFIG_BYTES)] | None = (
        Field(None, max_length=20)
    )
    voicemail: PatchObject | None = None


class AgentPublic(AgentConfig):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: UUID
    version: int = Field(description="Aggregate version: send it back in If-Match.")
    config_version: int = Field(description="Bumped by every configuration change.")
    archived: bool
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


class AgentPage(BaseModel):
    items: list[AgentPublic]
    total: int
    limit: int
    offset: int
