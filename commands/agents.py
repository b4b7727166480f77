"""Write side of voice agents: one eventsourcing Application, one method per command.

Each method loads, checks that the caller's space owns the aggregate, calls one aggregate
method, saves (optimistic concurrency) and returns ``Result(id, version, position, agent)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from pydantic import BaseModel, Field

from commands.group_commit import GroupCommit
from commands.writes import IdempotentWrites, Written
from domain.agent_config import MAX_CONFIG_BYTES, AgentConfig
from domain.agents import VoiceAgent
from domain.errors import ProviderUnavailable
from domain.text import Storable, max_json_bytes


class AgentNotFound(Exception):
    code = "agent_not_found"


class VersionMismatch(Exception):
    """The caller's If-Match version is not the current one."""

    code = "version_mismatch"


class ConcurrentModification(Exception):
    """Another writer saved this aggregate between our load and our save."""

    code = "concurrent_modification"


class Actor(Storable):
    """Who asks: the caller's space scopes everything they may see or change."""

    space_id: str = Field(min_length=1, max_length=128)
    subject: str = Field(min_length=1, max_length=256)


class CreateAgent(Storable):
    config: AgentConfig


class UpdateAgent(Storable):
    agent_id: UUID
    patch: Annotated[dict[str, Any], max_json_bytes(MAX_CONFIG_BYTES)]
    expected_version: int | None = None


class ArchiveAgent(Storable):
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

    def __init__(
        self,
        env: dict[str, str] | None = None,
        provider_problems: Callable[[AgentConfig], list[str]] | None = None,
    ) -> None:
        super().__init__(env)
        self._group_commit = GroupCommit(self.save)
        self._writes = IdempotentWrites(self, self._group_commit, _conflict)
        # what keeps a configuration from running in this deployment (unknown providers,
        # missing API keys): refused when the agent is saved, not discovered mid-call
        self._provider_problems = provider_problems or (lambda config: [])

    # -- commands -------------------------------------------------------------------------
    def create_agent(
        self, actor: Actor, cmd: CreateAgent, idempotency_key: str | None = None
    ) -> Result:
        def apply() -> VoiceAgent:
            self._ensure_runnable(cmd.config)
            return VoiceAgent.create(actor.space_id, cmd.config, actor.subject)

        return self._command(actor, cmd, idempotency_key, "create_agent", apply)

    def update_agent(
        self, actor: Actor, cmd: UpdateAgent, idempotency_key: str | None = None
    ) -> Result:
        def apply() -> VoiceAgent | Written:
            agent = self._owned(actor, cmd.agent_id, cmd.expected_version)
            if not agent.update(cmd.patch, actor.subject):
                return self._writes.unchanged(agent)
            self._ensure_runnable(agent.settings)
            return agent

        return self._command(actor, cmd, idempotency_key, "update_agent", apply)

    def archive_agent(
        self, actor: Actor, cmd: ArchiveAgent, idempotency_key: str | None = None
    ) -> Result:
        def apply() -> VoiceAgent:
            agent = self._owned(actor, cmd.agent_id, cmd.expected_version)
            agent.archive(actor.subject)
            return agent

        return self._command(actor, cmd, idempotency_key, "archive_agent", apply)

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

    def config_at(self, actor: Actor, agent_id: UUID, config_version: int) -> AgentConfig:
        """The agent's configuration at ``config_version`` (what a call was created with),
        even if the agent changed or was archived since."""
        self.get_agent(actor, agent_id)  # AgentNotFound outside the caller's space
        found = None
        for event in self.events.get(agent_id):
            if getattr(event, "config_version", None) == config_version:
                found = getattr(event, "config", None)
        if found is None:
            raise AgentNotFound(f"agent {agent_id} has no configuration version {config_version}")
        return AgentConfig.model_validate(found)

    # -- helpers --------------------------------------------------------------------------
    def _ensure_runnable(self, config: AgentConfig) -> None:
        found = self._provider_problems(config)
        if found:
            raise ProviderUnavailable("this agent cannot run here: " + "; ".join(found))

    def _owned(self, actor: Actor, agent_id: UUID, expected_version: int | None) -> VoiceAgent:
        agent = self.get_agent(actor, agent_id)
        if expected_version is not None and agent.version != expected_version:
            raise VersionMismatch(
                f"agent {agent_id} is at version {agent.version}, not {expected_version}; "
                "reload it and retry with the current version in If-Match"
            )
        return agent

    def _command(
        self, actor: Actor, cmd: BaseModel, key: str | None, command: str,
        apply: Callable[[], VoiceAgent | Written],
    ) -> Result:  # fmt: skip
        """Replay the key's first result, or run ``apply`` and save what it changed."""
        payload = cmd.model_dump(mode="json")
        written = self._writes.replay(actor.space_id, key, command, payload)
        if written is None:
            outcome = apply()
            if isinstance(outcome, Written):
                written = outcome
            else:
                written = self._writes.save(actor.space_id, outcome, key, command, payload)
        return Result(written.id, written.version, written.position, written.aggregate,
                      written.replayed)  # fmt: skip


def _conflict(agent: VoiceAgent) -> Exception:
    return ConcurrentModification(f"agent {agent.id} was changed concurrently; reload it and retry")
