"""Domain errors: each carries a stable ``code`` and a message a user can act on."""

from __future__ import annotations


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AgentArchived(DomainError):
    code = "agent_archived"


class InvalidConfig(DomainError):
    code = "invalid_config"


class ProviderUnavailable(DomainError):
    """The configuration names a provider this deployment cannot run (unknown, or no key)."""

    code = "provider_unavailable"
