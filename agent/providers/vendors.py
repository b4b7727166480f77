"""Factories for the vendor providers: LiveKit Agents plugins with keys from our settings.

Each factory imports its plugin when called (a worker loads only what its agents use) and makes
no network call: clients connect on first use. The model, voice and temperature come from the
agent's configuration when it sets them; otherwise the plugin's defaults apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livekit.agents import llm, stt, tts

from domain.errors import ProviderUnavailable

if TYPE_CHECKING:
    from domain.agent_config import AgentConfig
    from infra.settings import ProviderSettings

SttFactory = Callable[["AgentConfig", "ProviderSettings"], stt.STT]
LlmFactory = Callable[["AgentConfig", "ProviderSettings"], llm.LLM]
TtsFactory = Callable[["AgentConfig", "ProviderSettings"], tts.TTS]

COMPATIBLE_PLACEHOLDER_KEY = "none"  # self-hosted OpenAI-compatible servers often need no key


def key(settings: ProviderSettings, name: str) -> str:
    """The secret of credential ``name``; ProviderUnavailable naming its variable when unset."""
    value = getattr(settings, name)
    secret = value.get_secret_value() if value is not None else ""
    if not secret:
        raise ProviderUnavailable(
            f"this provider needs an API key: set VOXAGENT_PROVIDERS__{name.upper()}"
        )
    return str(secret)


def primary_language(language: str) -> str:
    return language.split("-")[0].lower()


def _given(**options: Any) -> dict[str, Any]:
    """Only the options the configuration sets, so the plugins' defaults stay in charge."""
    return {k: v for k, v in options.items() if v is not None}


# -- LLM ---------------------------------------------------------------------------------------


def openai_llm(config: AgentConfig, settings: ProviderSettings) -> llm.LLM:
    from livekit.plugins import openai

    c = config.llm
    return openai.LLM(
        api_key=key(settings, "openai_api_key"),
        temperature=c.temperature,
        **_given(model=c.model),
    )


def openai_compatible_llm(config: AgentConfig, settings: ProviderSettings) -> llm.LLM:
    from livekit.plugins import openai

    c = config.llm
    if not c.base_url:
        raise ProviderUnavailable("llm.provider 'openai-compatible' needs llm.base_url")
    secret = settings.openai_compatible_api_key
    api_key = secret.get_secret_value() if secret is not None else ""
    return openai.LLM(
        base_url=c.base_url,
        api_key=api_key or COMPATIBLE_PLACEHOLDER_KEY,
        temperature=c.temperature,
        **_given(model=c.model),
    )


def anthropic_llm(config: AgentConfig, settings: ProviderSettings) -> llm.LLM:
    from livekit.plugins import anthropic

    c = config.llm
    return anthropic.LLM(
        api_key=key(settings, "anthropic_api_key"),
        temperature=c.temperature,
        **_given(model=c.model),
    )


def google_llm(config: AgentConfig, settings: ProviderSettings) -> llm.LLM:
    from livekit.plugins import google

    c = config.llm
    return google.LLM(
        api_key=key(settings, "google_api_key"),
        vertexai=False,  # the Gemini API with our key, whatever GOOGLE_GENAI_USE_VERTEXAI says
        temperature=c.temperature,
        **_given(model=c.model),
    )


def groq_llm(config: AgentConfig, settings: ProviderSettings) -> llm.LLM:
    from livekit.plugins import groq

    c = config.llm
    return groq.LLM(
        api_key=key(settings, "groq_api_key"),
        temperature=c.temperature,
        **_given(model=c.model),
    )


# -- STT ---------------------------------------------------------------------------------------


def deepgram_stt(config: AgentConfig, settings: ProviderSettings) -> stt.STT:
    from livekit.plugins import deepgram

    return deepgram.STT(
        api_key=key(settings, "deepgram_api_key"),
        language=config.language,
        **_given(model=config.stt.model),
    )


def assemblyai_stt(config: AgentConfig, settings: ProviderSettings) -> stt.STT:
    from livekit.plugins import assemblyai

    return assemblyai.STT(
        api_key=key(settings, "assemblyai_api_key"), **_given(model=config.stt.model)
    )


def openai_stt(config: AgentConfig, settings: ProviderSettings) -> stt.STT:
    from livekit.plugins import openai

    return openai.STT(
        api_key=key(settings, "openai_api_key"),
        language=primary_language(config.language),
        **_given(model=config.stt.model),
    )


def elevenlabs_stt(config: AgentConfig, settings: ProviderSettings) -> stt.STT:
    from livekit.plugins import elevenlabs

    return elevenlabs.STT(
        api_key=key(settings, "elevenlabs_api_key"),
        language_code=primary_language(config.language),
        **_given(model=config.stt.model),
    )


# -- TTS ---------------------------------------------------------------------------------------


def elevenlabs_tts(config: AgentConfig, settings: ProviderSettings) -> tts.TTS:
    from livekit.plugins import elevenlabs

    return elevenlabs.TTS(
        api_key=key(settings, "elevenlabs_api_key"),
        **_given(voice_id=config.tts.voice, model=config.tts.model),
    )


def cartesia_tts(config: AgentConfig, settings: ProviderSettings) -> tts.TTS:
    from livekit.plugins import cartesia

    return cartesia.TTS(
        api_key=key(settings, "cartesia_api_key"),
        language=primary_language(config.language),
        **_given(voice=config.tts.voice, model=config.tts.model),
    )


def openai_tts(config: AgentConfig, settings: ProviderSettings) -> tts.TTS:
    from livekit.plugins import openai

    return openai.TTS(
        api_key=key(settings, "openai_api_key"),
        **_given(voice=config.tts.voice, model=config.tts.model),
    )


def resemble_tts(config: AgentConfig, settings: ProviderSettings) -> tts.TTS:
    from livekit.plugins import resemble

    return resemble.TTS(
        api_key=key(settings, "resemble_api_key"),
        **_given(voice_uuid=config.tts.voice, model=config.tts.model),
    )


LLMS: dict[str, LlmFactory] = {
    "openai": openai_llm,
    "openai-compatible": openai_compatible_llm,
    "anthropic": anthropic_llm,
    "google": google_llm,
    "groq": groq_llm,
}
STTS: dict[str, SttFactory] = {
    "deepgram": deepgram_stt,
    "assemblyai": assemblyai_stt,
    "openai": openai_stt,
    "elevenlabs": elevenlabs_stt,
}
TTSS: dict[str, TtsFactory] = {
    "elevenlabs": elevenlabs_tts,
    "cartesia": cartesia_tts,
    "openai": openai_tts,
    "resemble": resemble_tts,
}
