"""The VoiceAgent aggregate: an operator's configured agent, owned by one space.

Every configuration change bumps ``config_version`` so that a call can name the exact
configuration it ran with. Every event carries the whole configuration as of that event
(event-carried state), so consumers never need earlier events to know an agent. Archiving is a
soft delete: an archived agent takes no calls and no further changes.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate, event
from pydantic import ValidationError

from domain.agent_config import AgentConfig, merge_patch
from domain.errors import AgentArchived, InvalidConfig


def validated(data: dict[str, Any]) -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise InvalidConfig(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "config"
        parts.append(f"{where}: {err.get('msg')}")
    return "invalid agent configuration: " + "; ".join(parts)


class VoiceAgent(Aggregate):
    TOPIC = "voxagent.VoiceAgent"

    class Created(Aggregate.Created):
        TOPIC = "agent.created"
        SCHEMA_VERSION = 1
        space_id: str
        config: dict[str, Any]
        config_version: int
        actor: str

    class Updated(Aggregate.Event):
        TOPIC = "agent.updated"
        SCHEMA_VERSION = 1
        space_id: str
        config: dict[str, Any]
        changed: list[str]
        config_version: int
        actor: str

    class Archived(Aggregate.Event):
        TOPIC = "agent.archived"
        SCHEMA_VERSION = 1
        space_id: str
        config: dict[str, Any]
        config_version: int
        actor: str

    @event(Created)
    def __init__(
        self, space_id: str, config: dict[str, Any], config_version: int, actor: str
    ) -> None:
        self.space_id = space_id
        self.config = config
        self.config_version = config_version
        self.archived = False

    @classmethod
    def create(cls, space_id: str, config: AgentConfig, actor: str) -> VoiceAgent:
        return cls(space_id=space_id, config=config.as_data(), config_version=1, actor=actor)

    def update(self, patch: dict[str, Any], actor: str) -> bool:
        """Apply a JSON merge patch to the configuration. Returns False when nothing changed."""
        self._ensure_active("update")
        new = validated(merge_patch(self.config, patch)).as_data()
        changed = sorted(k for k, v in new.items() if self.config.get(k) != v)
        if not changed:
            return False
        self._updated(
            space_id=self.space_id,
            config=new,
            changed=changed,
            config_version=self.config_version + 1,
            actor=actor,
        )
        return True

    @event(Updated)
    def _updated(
        self,
        space_id: str,
        config: dict[str, Any],
        changed: list[str],
        config_version: int,
        actor: str,
    ) -> None:
        self.config = config
        self.config_version = config_version

    def archive(self, actor: str) -> None:
        self._ensure_active("archive")
        self._archived(
            space_id=self.space_id,
            config=self.config,
            config_version=self.config_version,
            actor=actor,
        )

    @event(Archived)
    def _archived(
        self, space_id: str, config: dict[str, Any], config_version: int, actor: str
    ) -> None:
        self.archived = True

    def ensure_accepts_calls(self) -> None:
        """Raise when this agent must not take a new call."""
        self._ensure_active("take calls")

    def _ensure_active(self, what: str) -> None:
        if self.archived:
            raise AgentArchived(
                f"agent {self.id} is archived and cannot {what}; create a new agent instead"
            )

    @property
    def settings(self) -> AgentConfig:
        return AgentConfig.model_validate(self.config)
