"""The provider registry: the catalogue's names, credentials, and the plugins it builds."""

from __future__ import annotations

import pytest
from livekit.agents import llm, stt, tts
from pydantic import SecretStr

from agent.providers import ProviderRegistry
from agent.providers.espeak_tts import EspeakTTS
from agent.providers.registry import FACTORIES
from agent.providers.scripted_llm import ScriptedLLM
from agent.providers.whisper_stt import WhisperSTT
from domain.agent_config import AgentConfig, LlmConfig, ScriptRule, SttConfig, TtsConfig
from domain.errors import ProviderUnavailable
from domain.providers import CATALOGUE
from infra.settings import ProviderSettings

pytestmark = pytest.mark.unit

KEYS = {
    name: SecretStr(f"test-{name}")
    for name in ProviderSettings.model_fields
    if name.endswith("_api_key")
}
BASES = {"stt": stt.STT, "llm": llm.LLM, "tts": tts.TTS}
SECTIONS = {"stt": SttConfig, "llm": LlmConfig, "tts": TtsConfig}
VENDORS = [(p.kind, p.name) for p in CATALOGUE if not p.offline]


def agent(kind: str = "llm", provider: str = "scripted", **options: object) -> AgentConfig:
    return AgentConfig(name="Shop", **{kind: SECTIONS[kind](provider=provider, **options)})


def test_every_catalogue_entry_has_a_factory_and_every_factory_an_entry():
    registered = {(kind, name) for kind, names in FACTORIES.items() for name in names}
    assert registered == {(p.kind, p.name) for p in CATALOGUE}


@pytest.mark.parametrize(("kind", "name"), VENDORS)
def test_a_missing_key_is_reported_with_its_environment_variable(kind, name):
    config = agent(kind, name)
    credential = next(p.credential for p in CATALOGUE if (p.kind, p.name) == (kind, name))
    registry = ProviderRegistry(ProviderSettings(espeak_binary="/bin/true"))
    env = f"VOXAGENT_PROVIDERS__{credential.upper()}"
    with pytest.raises(ProviderUnavailable, match=env) as raised:
        registry.check(config)
    assert raised.value.code == "provider_unavailable"
    with pytest.raises(ProviderUnavailable, match=env):
        getattr(registry, kind)(config)


@pytest.mark.parametrize(("kind", "name"), VENDORS)
def test_vendor_plugins_are_built_with_keys_and_without_network(kind, name):
    registry = ProviderRegistry(ProviderSettings(**KEYS, espeak_binary="/bin/true"))
    config = agent(kind, name)
    registry.check(config)
    assert isinstance(getattr(registry, kind)(config), BASES[kind])


def test_model_and_temperature_come_from_the_configuration():
    registry = ProviderRegistry(ProviderSettings(**KEYS))
    built = registry.llm(agent("llm", "openai", model="gpt-4o-mini", temperature=0.2))
    assert built.model == "gpt-4o-mini"
    assert built._opts.temperature == 0.2  # type: ignore[attr-defined]
    voice = registry.tts(agent("tts", "openai", voice="alloy", model="tts-1"))
    assert voice.model == "tts-1"
    assert voice._opts.voice == "alloy"  # type: ignore[attr-defined]


def test_openai_compatible_talks_to_the_configured_base_url_without_a_key():
    registry = ProviderRegistry(ProviderSettings())
    config = agent("llm", "openai-compatible", base_url="http://127.0.0.1:9/v1", model="local")
    registry.check(config)
    built = registry.llm(config)
    assert str(built._client.base_url).startswith("http://127.0.0.1:9/v1")  # type: ignore[attr-defined]
    assert built._client.api_key == "none"  # type: ignore[attr-defined]
    assert built.model == "local"

    keyed = ProviderRegistry(ProviderSettings(openai_compatible_api_key=SecretStr("sk-local")))
    assert keyed.llm(config)._client.api_key == "sk-local"  # type: ignore[attr-defined]


def test_openai_compatible_without_a_base_url_is_unavailable():
    registry = ProviderRegistry(ProviderSettings())
    with pytest.raises(ProviderUnavailable, match="llm.base_url"):
        registry.check(agent("llm", "openai-compatible"))


def test_the_scripted_llm_gets_the_call_variables_over_the_agent_defaults():
    config = AgentConfig(
        name="Shop",
        variables={"name": "default", "shop": "Acme"},
        llm=LlmConfig(script=(ScriptRule(match="hi", reply="{{name}} at {{shop}}"),)),
    )
    built = ProviderRegistry(ProviderSettings()).llm(config, {"name": "Ada"})
    assert isinstance(built, ScriptedLLM)
    assert built._variables == {"name": "Ada", "shop": "Acme"}


def test_offline_providers_take_their_settings():
    settings = ProviderSettings(whisper_device="cpu", whisper_compute_type="int8")
    registry = ProviderRegistry(settings.model_copy(update={"espeak_binary": "/bin/true"}))
    config = AgentConfig(name="Shop", language="de", tts=TtsConfig(voice=None))
    whisper = registry.stt(config)
    assert isinstance(whisper, WhisperSTT)
    assert whisper.provider == "whisper-local"
    assert whisper.model == "tiny.en"
    assert not whisper.capabilities.streaming
    espeak = registry.tts(config)
    assert isinstance(espeak, EspeakTTS)
    assert espeak.voice == "de"
    assert registry.tts(AgentConfig(name="Shop")).voice == "en-us"  # type: ignore[attr-defined]
    assert registry.tts(agent("tts", "espeak", voice="en-gb+f3")).voice == "en-gb+f3"  # type: ignore[attr-defined]


def test_a_missing_espeak_program_says_how_to_install_it():
    registry = ProviderRegistry(ProviderSettings(espeak_binary="no-such-espeak-ng"))
    for attempt in (registry.check, registry.tts):
        with pytest.raises(ProviderUnavailable, match="apt-get install espeak-ng") as raised:
            attempt(AgentConfig(name="Shop"))
        assert "voxagent stack up" in raised.value.message


def test_a_missing_whisper_model_is_reported(tmp_path):
    registry = ProviderRegistry(
        ProviderSettings(whisper_model_path=tmp_path / "absent", espeak_binary="/bin/true")
    )
    with pytest.raises(ProviderUnavailable, match="WHISPER_MODEL_PATH"):
        registry.check(AgentConfig(name="Shop"))


def test_unknown_providers_are_unavailable():
    registry = ProviderRegistry(ProviderSettings())
    config = AgentConfig.model_construct(
        name="Shop", stt=SttConfig(), llm=LlmConfig(provider="nope"), tts=TtsConfig()
    )
    with pytest.raises(ProviderUnavailable, match="nope"):
        registry.llm(config)


def test_the_silero_vad_is_loaded_once_per_process_from_the_wheel():
    from livekit.agents import vad

    first = ProviderRegistry(ProviderSettings()).vad()
    assert isinstance(first, vad.VAD)
    assert ProviderRegistry(ProviderSettings()).vad() is first
