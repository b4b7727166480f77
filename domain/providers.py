"""The catalogue of speech and language providers an agent can name, and the credential each
needs. Pure data: the API checks an agent's configuration against it when the agent is saved,
the worker again when a call starts (agent/providers builds the actual clients)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["stt", "llm", "tts"]


@dataclass(frozen=True)
class ProviderSpec:
    kind: Kind
    name: str
    credential: str | None  # the ProviderSettings field that must be set, None for offline ones
    offline: bool = False


CATALOGUE: tuple[ProviderSpec, ...] = (
    ProviderSpec("stt", "whisper-local", None, offline=True),
    ProviderSpec("stt", "deepgram", "deepgram_api_key"),
    ProviderSpec("stt", "assemblyai", "assemblyai_api_key"),
    ProviderSpec("stt", "openai", "openai_api_key"),
    ProviderSpec("stt", "elevenlabs", "elevenlabs_api_key"),
    ProviderSpec("llm", "scripted", None, offline=True),
    ProviderSpec("llm", "openai-compatible", None, offline=True),
    ProviderSpec("llm", "openai", "openai_api_key"),
    ProviderSpec("llm", "anthropic", "anthropic_api_key"),
    ProviderSpec("llm", "google", "google_api_key"),
    ProviderSpec("llm", "groq", "groq_api_key"),
    ProviderSpec("tts", "espeak", None, offline=True),
    ProviderSpec("tts", "elevenlabs", "elevenlabs_api_key"),
    ProviderSpec("tts", "cartesia", "cartesia_api_key"),
    ProviderSpec("tts", "openai", "openai_api_key"),
    ProviderSpec("tts", "resemble", "resemble_api_key"),
)


def spec(kind: Kind, name: str) -> ProviderSpec | None:
    return next((p for p in CATALOGUE if p.kind == kind and p.name == name), None)


def names(kind: Kind) -> list[str]:
    return [p.name for p in CATALOGUE if p.kind == kind]


def problems(config: Any, credentials: set[str]) -> list[str]:
    """What keeps ``config`` (an AgentConfig) from running here: unknown provider names and
    missing credentials (``credentials`` = the names of the credential settings that are set)."""
    found: list[str] = []
    for kind in ("stt", "llm", "tts"):
        name = getattr(config, kind).provider
        known = spec(kind, name)
        if known is None:
            found.append(f"{kind}.provider {name!r} is unknown; choose one of "
                         + ", ".join(names(kind)))  # fmt: skip
        elif known.credential and known.credential not in credentials:
            env = f"VOXAGENT_PROVIDERS__{known.credential.upper()}"
            found.append(f"{kind}.provider {name!r} needs an API key: set {env}")
    if config.llm.provider == "openai-compatible" and not config.llm.base_url:
        found.append("llm.provider 'openai-compatible' needs llm.base_url")
    return found
