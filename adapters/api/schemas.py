"""HTTP schemas for agents: Create, Patch and Public, kept apart (STYLE)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.agent_config import AgentConfig


class AgentCreate(AgentConfig):
    """The configuration of a new agent (every field but ``name`` has a default)."""


class AgentPatch(BaseModel):
    """A JSON merge patch (RFC 7396) of an agent's configuration: nested objects merge,
    ``null`` restores a field's default, lists (``tools``) are replaced whole."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    system_prompt: str | None = None
    first_message: str | None = None
    language: str | None = None
    stt: dict[str, Any] | None = None
    llm: dict[str, Any] | None = None
    tts: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    webhooks: dict[str, Any] | None = None
    max_call_duration_seconds: int | None = None
    silence_timeout_seconds: float | None = None
    silence_prompt: str | None = None
    variables: dict[str, str] | None = None


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
