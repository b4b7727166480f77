"""``scripted``: a deterministic LLM driven by the agent's ``llm.script`` rules.

On each ``chat()``:

* if the context ends with the output of a tool call this LLM asked for, it speaks that rule's
  ``reply`` with ``{{result}}`` / ``{{result.field}}`` filled from the output (then calls the
  ``end_call`` tool when the rule says so and the session offers it);
* otherwise it matches the caller's latest words against the rules in order (``re.search``,
  case-insensitive). The first match calls its ``tool`` (arguments with ``{{...}}`` filled) or
  speaks its ``reply`` (and calls ``end_call`` when asked); no match, or nothing said, gets the
  ``fallback_reply``.

Placeholders resolve from the per-call variables, the matched pattern's named groups, and the
tool result; an unknown one becomes an empty string. No I/O, no randomness.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import llm
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)

from domain.agent_config import LlmConfig, ScriptRule

END_CALL = "end_call"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")
WORDS_PER_CHUNK = 4


@dataclass(frozen=True)
class Response:
    text: str = ""
    tool_calls: tuple[llm.FunctionToolCall, ...] = ()


@dataclass(frozen=True)
class _Issued:
    rule: ScriptRule | None  # None for end_call
    groups: Mapping[str, str] = field(default_factory=dict)


class ScriptedLLM(llm.LLM):
    def __init__(self, config: LlmConfig, variables: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._config = config
        self._rules = [(rule, re.compile(rule.match, re.IGNORECASE)) for rule in config.script]
        self._variables = dict(variables or {})
        self._issued: dict[str, _Issued] = {}
        self._ids = itertools.count(1)

    @property
    def model(self) -> str:
        return self._config.model or "scripted"

    @property
    def provider(self) -> str:
        return "scripted"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> ScriptedStream:
        offered = tool_names(tools or [])
        allow_tools = tool_choice != "none"
        response = self.respond(chat_ctx, offered if allow_tools else set(), allow_tools)
        return ScriptedStream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=conn_options,
            response=response,
            request_id=f"scripted-{next(self._ids)}",
        )

    def respond(
        self, chat_ctx: llm.ChatContext, offered: set[str], allow_tools: bool = True
    ) -> Response:
        """What to say and call next (records the tool calls it asks for)."""
        items = [
            i
            for i in chat_ctx.items
            if i.type in ("message", "function_call", "function_call_output")
        ]
        if items and items[-1].type == "function_call_output":
            return self._after_tool(items, offered)
        text = latest_user_text(items)
        if text:
            for rule, pattern in self._rules:
                match = pattern.search(text)
                if match is None:
                    continue
                groups = {k: v or "" for k, v in match.groupdict().items()}
                if rule.tool:
                    if not allow_tools:
                        continue
                    return Response(
                        tool_calls=(self._call(rule.tool, rule, groups, rule.arguments),)
                    )
                return self._reply(rule, groups, None, offered)
        return Response(text=self._fill(self._config.fallback_reply, {}, None))

    def _after_tool(self, items: Sequence[llm.ChatItem], offered: set[str]) -> Response:
        for item in reversed(items):
            if item.type not in ("function_call", "function_call_output"):
                break
            if item.type != "function_call_output":
                continue
            issued = self._issued.get(item.call_id)
            if issued is None or item.name not in ("", self._issued_name(issued)):
                continue
            if issued.rule is None:  # our end_call has run: the goodbye was already said
                return Response()
            return self._reply(issued.rule, issued.groups, item.output, offered)
        return Response(text=self._fill(self._config.fallback_reply, {}, None))

    def _reply(
        self, rule: ScriptRule, groups: Mapping[str, str], result: str | None, offered: set[str]
    ) -> Response:
        text = self._fill(rule.reply, groups, result)
        calls = (
            (self._call(END_CALL, None, {}, {}),) if rule.end_call and END_CALL in offered else ()
        )
        return Response(text=text, tool_calls=calls)

    def _call(
        self,
        name: str,
        rule: ScriptRule | None,
        groups: Mapping[str, str],
        arguments: Mapping[str, Any],
    ) -> llm.FunctionToolCall:
        call_id = f"scripted_call_{len(self._issued) + 1}"
        self._issued[call_id] = _Issued(rule, dict(groups))
        args = substitute_values(arguments, lambda s: self._fill(s, groups, None))
        return llm.FunctionToolCall(name=name, arguments=json.dumps(args), call_id=call_id)

    @staticmethod
    def _issued_name(issued: _Issued) -> str:
        return (issued.rule.tool or "") if issued.rule else END_CALL

    def _fill(self, template: str, groups: Mapping[str, str], result: str | None) -> str:
        values = {**self._variables, **groups}
        parsed = parse_result(result) if result is not None else None

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if result is not None and name == "result":
                return result
            if result is not None and name.startswith("result."):
                return as_text(lookup(parsed, name.split(".")[1:]))
            return values.get(name, "")

        return PLACEHOLDER.sub(one, template)


class ScriptedStream(llm.LLMStream):
    def __init__(
        self,
        llm_: ScriptedLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        response: Response,
        request_id: str,
    ) -> None:
        super().__init__(llm_, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._response = response
        self._request_id = request_id

    async def _run(self) -> None:
        rid = self._request_id
        for piece in chunks(self._response.text):
            self._event_ch.send_nowait(
                llm.ChatChunk(id=rid, delta=llm.ChoiceDelta(role="assistant", content=piece))
            )
        if self._response.tool_calls:
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=rid,
                    delta=llm.ChoiceDelta(
                        role="assistant", tool_calls=list(self._response.tool_calls)
                    ),
                )
            )
        prompt = context_words(self._chat_ctx)
        completion = count_words(self._response.text) + sum(
            count_words(f"{c.name} {c.arguments}") for c in self._response.tool_calls
        )
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=rid,
                usage=llm.CompletionUsage(
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    total_tokens=prompt + completion,
                ),
            )
        )


def tool_names(tools: Sequence[Any]) -> set[str]:
    names: set[str] = set()
    for tool in tools:
        if isinstance(tool, llm.Toolset):
            names |= tool_names(tool.tools)
        elif isinstance(getattr(tool, "id", None), str):
            names.add(tool.id)
    return names


def latest_user_text(items: Sequence[llm.ChatItem]) -> str:
    """The caller's words since the agent last spoke; "" when the agent spoke last."""
    for item in reversed(items):
        if item.type != "message" or item.role not in ("user", "assistant"):
            continue
        return (item.text_content or "").strip() if item.role == "user" else ""
    return ""


def parse_result(text: str) -> Any:
    """A tool output as data: JSON, or the Python repr the framework makes of a returned dict."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


def lookup(data: Any, path: list[str]) -> Any:
    """Follow ``a.b.0`` through mappings and lists; None when the path leads nowhere."""
    for key in path:
        if isinstance(data, Mapping) and key in data:
            data = data[key]
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return None
    return data


def as_text(value: Any) -> str:
    """Strings as they are, anything else as compact JSON (as agent.tools fills placeholders)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def substitute_values(value: Any, fill: Any) -> Any:
    """``fill`` applied to every string inside a JSON-like value."""
    if isinstance(value, str):
        return fill(value)
    if isinstance(value, Mapping):
        return {k: substitute_values(v, fill) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute_values(v, fill) for v in value]
    return value


def chunks(text: str) -> list[str]:
    """The reply in a few pieces, as a model would stream it (joined, they equal ``text``)."""
    pieces = re.findall(r"\s*\S+\s*", text)
    if not pieces:
        return [text] if text else []
    return [
        "".join(pieces[i : i + WORDS_PER_CHUNK]) for i in range(0, len(pieces), WORDS_PER_CHUNK)
    ]


def count_words(text: str) -> int:
    return len(text.split())


def context_words(chat_ctx: llm.ChatContext) -> int:
    total = 0
    for item in chat_ctx.items:
        if item.type == "message":
            total += count_words(item.text_content or "")
        elif item.type == "function_call":
            total += count_words(f"{item.name} {item.arguments}")
        elif item.type == "function_call_output":
            total += count_words(item.output)
    return total
