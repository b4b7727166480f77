"""What an operator configures on a voice agent: immutable pydantic value objects.

Events carry configurations as plain JSON (``AgentConfig.model_dump(mode="json")``), so stored
events never depend on these classes' Python shape; ``AgentConfig.model_validate`` rebuilds them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from domain.text import Storable, check_json_size, check_storable, max_json_bytes

TOOL_NAME = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
PROVIDER_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
LANGUAGE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$"
MAX_HEADER_VALUE = 4096
MAX_CONFIG_BYTES = 512 * 1024  # the whole configuration as JSON: events stay far below 1 MB
VariableName = Annotated[str, Field(min_length=1, max_length=128)]
VariableValue = Annotated[str, Field(max_length=10_000)]


class Frozen(Storable):
    model_config = ConfigDict(frozen=True, extra="forbid")


def check_http_url(value: str | None) -> str | None:
    """A syntactic check only; where a URL may point is decided at connect time (SSRF guard)."""
    if value is None:
        return None
    if len(value) > 2048:
        raise ValueError("must be at most 2048 characters")
    check_storable(value)  # urlsplit must not see a NUL (it would pass it through)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL, e.g. https://example.com/hook")
    if parts.username or parts.password:
        raise ValueError("must not embed credentials; put them in the tool's headers instead")
    return value


class SttConfig(Frozen):
    provider: str = Field("whisper-local", max_length=64, pattern=PROVIDER_NAME)
    model: str | None = Field(None, max_length=128)


class ScriptRule(Frozen):
    """One rule of the scripted LLM: when the caller's words match, call a tool and/or reply.

    ``reply`` and ``arguments`` may hold ``{{name}}`` placeholders: dynamic variables, the
    pattern's named groups, and after a tool call ``{{result}}`` / ``{{result.field}}``.
    """

    match: str = Field(min_length=1, max_length=500, description="Regex, case-insensitive.")
    reply: str = Field("", max_length=2000)
    tool: str | None = Field(None, max_length=64, pattern=TOOL_NAME)
    arguments: Annotated[dict[str, Any], max_json_bytes(16 * 1024)] = Field(default_factory=dict)
    end_call: bool = Field(False, description="Hang up after the reply.")

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _does_something(self) -> ScriptRule:
        if not self.reply and not self.tool and not self.end_call:
            raise ValueError("a rule needs a reply, a tool or end_call")
        return self


class LlmConfig(Frozen):
    provider: str = Field("scripted", max_length=64, pattern=PROVIDER_NAME)
    model: str | None = Field(None, max_length=128)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    base_url: str | None = Field(
        None, description="An OpenAI-compatible endpoint (provider `openai-compatible`)."
    )
    script: tuple[ScriptRule, ...] = Field(
        (), max_length=200, description="Rules of the `scripted` provider, tried in order."
    )
    fallback_reply: str = Field(
        "I did not catch that. Could you say it again?", max_length=2000,
        description="What the `scripted` provider says when no rule matches.",
    )  # fmt: skip

    _base_url = field_validator("base_url")(classmethod(lambda cls, v: check_http_url(v)))


class TtsConfig(Frozen):
    provider: str = Field("espeak", max_length=64, pattern=PROVIDER_NAME)
    voice: str | None = Field(None, max_length=128)
    model: str | None = Field(None, max_length=128)


class ToolConfig(Frozen):
    """An HTTP endpoint the agent may call as a function tool."""

    name: str = Field(max_length=64, pattern=TOOL_NAME)
    description: str = Field(min_length=1, max_length=1024)
    parameters: Annotated[dict[str, Any], max_json_bytes(64 * 1024)] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the arguments (an object schema).",
    )
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str
    headers: dict[str, Annotated[str, Field(max_length=MAX_HEADER_VALUE)]] = Field(
        default_factory=dict
    )
    timeout_seconds: float = Field(10.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value)  # type: ignore[return-value]

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('must be a JSON Schema of type "object"')
        if not isinstance(value.get("properties", {}), dict):
            raise ValueError('"properties" must be an object')
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for name in value:
            if not re.match(HEADER_NAME, name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if len(value) > 32:
            raise ValueError("at most 32 headers")
        return value


class WebhooksConfig(Frozen):
    pre_call_url: str | None = None
    post_call_url: str | None = None

    _urls = field_validator("pre_call_url", "post_call_url")(
        classmethod(lambda cls, v: check_http_url(v))
    )


TRANSFER_DESTINATION = r"^(\+[1-9][0-9]{6,14}|sips?:[^\s@]+@[^\s]+)$"


class TransferTarget(Frozen):
    """A destination the agent's ``transfer_call`` tool may hand the caller to. The model only
    ever chooses among these names: it never dials a number it made up or heard."""

    name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    destination: str = Field(
        max_length=256, pattern=TRANSFER_DESTINATION,
        description="An E.164 number (`+15551234567`) or a SIP URI (`sip:desk@pbx.example.com`).",
    )  # fmt: skip
    description: str = Field("", max_length=500, description="When to choose it (for the LLM).")
    mode: Literal["cold", "warm"] = "cold"
    briefing: str = Field(
        "", max_length=2000,
        description="Warm transfers: what the agent says to the human once they answer (SIP, "
        "VoxImplant: the caller on hold), or to the caller before handing over (Twilio) "
        "(`{{variables}}`).",
    )  # fmt: skip


class VoicemailPolicy(Frozen):
    """What an outbound call does when the provider's answering-machine detection says a
    machine answered: hang up, or leave ``message`` and then hang up."""

    action: Literal["hang_up", "leave_message"] = "hang_up"
    message: str = Field("", max_length=2000, description="Said to the machine (`{{variables}}`).")

    @model_validator(mode="after")
    def _message(self) -> VoicemailPolicy:
        if self.action == "leave_message" and not self.message.strip():
            raise ValueError("leave_message needs a message")
        return self


class AgentConfig(Frozen):
    """The whole configuration of a voice agent at one config version."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    system_prompt: str = Field("", max_length=100_000)
    first_message: str = Field("", max_length=2000)
    language: str = Field("en", max_length=35, pattern=LANGUAGE)
    stt: SttConfig = SttConfig()
    llm: LlmConfig = LlmConfig()
    tts: TtsConfig = TtsConfig()
    tools: tuple[ToolConfig, ...] = Field((), max_length=64)
    webhooks: WebhooksConfig = WebhooksConfig()
    max_call_duration_seconds: int = Field(1800, ge=10, le=14_400)
    silence_timeout_seconds: float = Field(
        15.0, ge=3, le=600,
        description="When neither side spoke for this long, the agent asks whether the caller "
        "is still there; after a second such silence it ends the call.",
    )  # fmt: skip
    silence_prompt: str = Field("Are you still there?", max_length=500)
    variables: Annotated[dict[VariableName, VariableValue], max_json_bytes(64 * 1024)] = Field(
        default_factory=dict,
        max_length=200,
        description="Default dynamic variables for `{{name}}` placeholders (the pre-call "
        "webhook can override them per call).",
    )
    transfer_targets: tuple[TransferTarget, ...] = Field(
        (), max_length=20,
        description="Where the built-in `transfer_call` tool may transfer the caller (the tool "
        "exists only when this is not empty).",
    )  # fmt: skip
    voicemail: VoicemailPolicy = Field(
        VoicemailPolicy(),
        description="Outbound calls a machine answered (answering-machine detection).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @model_validator(mode="after")
    def _unique_tools(self) -> AgentConfig:
        names = [t.name for t in self.tools]
        for builtin in ("end_call", "transfer_call"):
            if builtin in names:
                raise ValueError(f"'{builtin}' is a built-in tool; name yours otherwise")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
        targets = [t.name for t in self.transfer_targets]
        if len(set(targets)) != len(targets):
            raise ValueError("transfer_targets names must be unique")
        known = set(names) | ({"transfer_call"} if targets else set())
        unknown = sorted({r.tool for r in self.llm.script if r.tool and r.tool not in known})
        if unknown:
            raise ValueError(f"llm.script names tools that are not configured: {unknown}")
        check_json_size(self.as_data(), MAX_CONFIG_BYTES, "the whole configuration")
        return self

    def as_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


CONFIG_FIELDS = tuple(AgentConfig.model_fields)


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: objects merge, ``null`` removes, anything else replaces."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = value
    return result
