"""Builds the VAD, STT, LLM and TTS of a call from an agent's configuration.

Provider names are exactly those of ``domain.providers.CATALOGUE`` (a unit test keeps the two
in step). Offline providers run on this machine; vendor ones are LiveKit plugins
(``agent.providers.vendors``). Heavy local models load once per process and are shared by every
call: Silero here, Whisper in ``whisper_stt``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from livekit.agents import llm, stt, tts, vad

from agent.providers import vendors
from agent.providers.espeak_tts import EspeakTTS, find_binary, missing_binary_message
from agent.providers.scripted_llm import ScriptedLLM
from agent.providers.whisper_stt import WhisperSTT
from domain import providers as catalogue
from domain.errors import ProviderUnavailable

if TYPE_CHECKING:
    from domain.agent_config import AgentConfig
    from infra.settings import ProviderSettings

F = TypeVar("F")

_vad: vad.VAD | None = None
_vad_lock = threading.Lock()


def silero_vad() -> vad.VAD:
    """The process-wide Silero VAD (its ONNX model ships inside the plugin's wheel)."""
    global _vad
    with _vad_lock:
        if _vad is None:
            from livekit.plugins import silero

            _vad = silero.VAD.load()
        return _vad


def whisper_stt(config: AgentConfig, settings: ProviderSettings) -> stt.STT:
    return WhisperSTT(
        model_path=settings.whisper_model_path,
        device=settings.whisper_device,
        compute_type=settings.whisper_compute_type,
        language=config.language,
        workers=settings.whisper_workers,
    )


def espeak_tts(config: AgentConfig, settings: ProviderSettings) -> tts.TTS:
    return EspeakTTS(
        binary=settings.espeak_binary, voice=config.tts.voice, language=config.language
    )


STT_FACTORIES: dict[str, vendors.SttFactory] = {"whisper-local": whisper_stt, **vendors.STTS}
LLM_FACTORIES: dict[str, vendors.LlmFactory | None] = {"scripted": None, **vendors.LLMS}
TTS_FACTORIES: dict[str, vendors.TtsFactory] = {"espeak": espeak_tts, **vendors.TTSS}
FACTORIES: dict[str, Mapping[str, object]] = {
    "stt": STT_FACTORIES,
    "llm": LLM_FACTORIES,
    "tts": TTS_FACTORIES,
}


class ProviderRegistry:
    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings

    def problems(self, config: AgentConfig) -> list[str]:
        """Everything that keeps ``config`` from running on this worker."""
        found = catalogue.problems(config, self._settings.credentials())
        if config.tts.provider == "espeak" and find_binary(self._settings.espeak_binary) is None:
            found.append(
                "tts.provider 'espeak': " + missing_binary_message(self._settings.espeak_binary)
            )
        path = self._settings.whisper_model_path
        if config.stt.provider == "whisper-local" and path is not None and not path.exists():
            found.append(
                f"stt.provider 'whisper-local': no model at {path}; "
                "fix VOXAGENT_PROVIDERS__WHISPER_MODEL_PATH"
            )
        return found

    def check(self, config: AgentConfig) -> None:
        """Raise ProviderUnavailable, listing every problem, unless ``config`` can run here."""
        found = self.problems(config)
        if found:
            raise ProviderUnavailable("; ".join(found))

    def stt(self, config: AgentConfig) -> stt.STT:
        return _pick(STT_FACTORIES, "stt", config.stt.provider)(config, self._settings)

    def llm(self, config: AgentConfig, variables: Mapping[str, str] | None = None) -> llm.LLM:
        """The call's LLM; ``variables`` (the call's dynamic variables) override the agent's."""
        if config.llm.provider == "scripted":
            return ScriptedLLM(config.llm, {**config.variables, **(variables or {})})
        factory = _pick(LLM_FACTORIES, "llm", config.llm.provider)
        assert factory is not None  # noqa: S101 (only `scripted` has none)
        return factory(config, self._settings)

    def tts(self, config: AgentConfig) -> tts.TTS:
        return _pick(TTS_FACTORIES, "tts", config.tts.provider)(config, self._settings)

    def vad(self) -> vad.VAD:
        return silero_vad()


def _pick(factories: Mapping[str, F], kind: str, name: str) -> F:
    if name not in factories:
        raise ProviderUnavailable(
            f"{kind}.provider {name!r} is unknown; choose one of {', '.join(factories)}"
        )
    return factories[name]
