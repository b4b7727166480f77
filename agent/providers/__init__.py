"""Speech and language providers of the agent worker (offline ones and vendor plugins)."""

from agent.providers.registry import ProviderRegistry

__all__ = ["ProviderRegistry"]
