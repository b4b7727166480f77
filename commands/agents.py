"""Write side of voice agents: one eventsourcing Application, one method per command.

Each method loads, checks that the caller's space owns the aggregate, calls one aggregate
method, saves (optimistic concurrency) and returns ``Result(id, version, position, agent)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError
from pydantic import BaseModel, Field

from commands.group_commit import GroupCommit
from commands.idempotency import (
    IdempotencyKeyReused,
    IdempotencyRecord,
    fingerprint,
)
from domain.agent_config import AgentConfig
from domain.agents import VoiceAgent


class AgentNotFound(Exception):
    code = "agent_not_found"


class VersionMismatch(Exception):
    """The caller's If-Match version is not the current one."""

    code = "version_mismatch"


class ConcurrentModification(Exception):
    """Another writer saved this aggregate between our load and our save."""

    code = "concurrent_modification"


class Actor(BaseModel):
    """Who asks: the caller's space scopes everything they may see or change."""

    space_id: str = Field(min_length=1, max_length=128)
    subject: str = Field(min_length=1, max_length=256)


class CreateAgent(BaseModel):
    config: AgentConfig


class UpdateAgent(BaseModel):
    agent_id: UUID
    patch: dict[str, Any]
    expected_version: int | None = None


class ArchiveAgent(BaseModel):
    agent_id: UUID
    expected_version: int | None = None


@dataclass(frozen=True)
class Result:
    id: UUID
    version: int
    position: int | None
    agent: VoiceAgent | None = None
    replayed: bool = False


class AgentsApplication(Application[UUID]):
    name = "agents"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self._group_commit = GroupCommit(self.save)

    # -- commands -------------------------------------------------------------------------
    def create_agent(
        self, actor: Actor, cmd: CreateAgent, idempotency_key: str | None = None
    ) -> Result:
        payload = cmd.model_dump(mode="json")
        replay = self._replay(actor, idempotency_key, "create_agent", payload)
        if replay:
            return replay
        agent = VoiceAgent.create(actor.space_id, cmd.config, actor.subject)
        return self._save(actor, agent, idempotency_key, "create_agent", payload)

    def update_agent(
        self, actor: Actor, cmd: UpdateAgent, idempotency_key: str | None = None
    ) -> Result:
        payload = cmd.model_dump(mode="json")
        replay = self._replay(actor, idempotency_key, "update_agent", payload)
        if replay:
            return replay
        agent = self._owned(actor, cmd.agent_id, cmd.expected_version)
        if not agent.update(cmd.patch, actor.subject):
            return Result(agent.id, agent.version, self._position(agent), agent)
        return self._save(actor, agent, idempotency_key, "update_agent", payload)

    def archive_agent(
        self, actor: Actor, cmd: ArchiveAgent, idempotency_key: str | None = None
    ) -> Result:
        payload = cmd.model_dump(mode="json")
        replay = self._replay(actor, idempotency_key, "archive_agent", payload)
        if replay:
            return replay
        agent = self._owned(actor, cmd.agent_id, cmd.expected_version)
        agent.archive(actor.subject)
        return self._save(actor, agent, idempotency_key, "archive_agent", payload)

    # -- queries on the write model (used by other contexts, e.g. calls) -------------------
    def get_agent(self, actor: Actor, agent_id: UUID, version: int | None = None) -> VoiceAgent:
        """The agent as it was at ``version`` (the config a call started with), or now."""
        try:
            agent: VoiceAgent = self.repository.get(agent_id, version=version)
        except AggregateNotFoundError:
            raise AgentNotFound(f"agent {agent_id} not found") from None
        if agent.space_id != actor.space_id:
            raise AgentNotFound(f"agent {agent_id} not found")
        return agent

    # -- helpers --------------------------------------------------------------------------
    def _owned(self, actor: Actor, agent_id: UUID, expected_version: int | None) -> VoiceAgent:
        agent = self.get_agent(actor, agent_id)
        if expected_version is not None and agent.version != expected_version:
            raise VersionMismatch(
                f"agent {agent_id} is at version {agent.version}, not {expected_version}; "
                "reload it and retry with the current version in If-Match"
            )
        return agent

    def _save(
        self, actor: Actor, agent: VoiceAgent, key: str | None, command: str, payload: Any
    ) -> Result:
        record = None
        if key is not None:
            record = IdempotencyRecord(
                actor.space_id,
                key,
                command,
                fingerprint(command, payload),
                agent.id,
                agent.version,
            )
        try:
            position = self._group_commit.commit(agent.collect_events(), record)
        except IntegrityError:
            replay = self._replay(actor, key, command, payload)
            if replay:
                return replay
            raise ConcurrentModification(
                f"agent {agent.id} was changed concurrently; reload it and retry"
            ) from None
        return Result(agent.id, agent.version, position, agent)

    def _replay(self, actor: Actor, key: str | None, command: str, payload: Any) -> Result | None:
        if key is None:
            return None
        record = self.recorder.get_idempotency_record(actor.space_id, key)  # type: ignore[attr-defined]
        if record is None:
            return None
        if record.command != command or record.fingerprint != fingerprint(command, payload):
            raise IdempotencyKeyReused(key)
        agent: VoiceAgent = self.repository.get(record.aggregate_id, version=record.version)
        position = self.recorder.position_of(record.aggregate_id, record.version)  # type: ignore[attr-defined]
        return Result(record.aggregate_id, record.version, position, agent, replayed=True)

    def _position(self, agent: VoiceAgent) -> int | None:
        return self.recorder.position_of(agent.id, agent.version)  # type: ignore[attr-defined]
