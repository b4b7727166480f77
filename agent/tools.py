"""The agent's HTTP tools: endpoints an operator configured, offered to the LLM as function tools.

``HttpTool.invoke`` checks the LLM's arguments against the tool's JSON Schema (Draft 2020-12),
fills ``{{variable}}`` placeholders into the URL and header values, sends the request through
``GuardedHttpClient`` and returns a ``ToolOutcome``; it never raises for a network or target
problem. Its ``error`` starts with a stable prefix:

- ``invalid_arguments: <which argument, why>``: the URL was not called;
- ``tool_misconfigured: <why>``: the tool's ``parameters`` are not a valid JSON Schema;
- ``target_refused: <reason>``: the SSRF guard refused the URL (statically, or at connect time
  through ``GuardedResolver``);
- ``timeout``: no complete answer within the tool's ``timeout_seconds`` (everything included);
- ``connect_error: <detail>`` / ``http_error: <detail>`` / ``invalid_request: <detail>``;
- ``http_status: HTTP <code>[: <start of the body>]``: the tool answered, but not with a 2xx
  (redirects are answers too: they are never followed).

``function_tools`` wraps each tool as a LiveKit ``RawFunctionTool``: the LLM receives the
response text (the first 16 KiB), or a ``ToolError`` saying what failed, and every invocation is
reported to ``on_invoked`` (the worker's ``call.tool_invoked`` signal, docs/signals.md).

Arguments are sent as the LLM gave them: placeholders are filled only into what the operator
wrote (URL and header values), never into the LLM's values. Header values are secrets (API keys)
and are never logged; nothing here logs a request or response.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from livekit.agents import RunContext, ToolError, function_tool
from livekit.agents.llm import RawFunctionTool
from multidict import CIMultiDict
from referencing.exceptions import Unresolvable

from adapters.net.http import GuardedHttpClient, HttpResponse
from domain.agent_config import ToolConfig

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 16 * 1024
USER_AGENT = "Voxagent-Tools/1"
ToolStatus = Literal["ok", "error", "timeout", "refused"]

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\s*\}\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUERY_METHODS = frozenset({"GET", "DELETE"})


def substitute(
    template: str, variables: Mapping[str, Any], *, escape: Callable[[str], str] | None = None
) -> str:
    """Fill ``{{name}}`` and dotted ``{{a.b}}`` placeholders from ``variables``.

    A name is looked up as a key first, then as a path through nested mappings (``{{a.0}}``
    indexes a list). An unknown name becomes the empty string, silently: a missing variable is
    normal (a pre-call hook that did not answer). Strings are inserted as they are, other values
    as JSON (``true``, ``3``, ``{"k":"v"}``). Nothing is ever evaluated: text between braces that
    is not a name (``{{ 1+1 }}``) stays literally, and inserted values are not scanned again.
    ``escape`` transforms each inserted value (e.g. percent-encoding for URLs).
    """

    def replace(match: re.Match[str]) -> str:
        text = _as_text(_lookup(variables, match.group(1)))
        return escape(text) if escape is not None else text

    return _PLACEHOLDER.sub(replace, template)


def _lookup(variables: Mapping[str, Any], name: str) -> Any:
    if name in variables:
        return variables[name]
    current: Any = variables
    for part in name.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _url_component(value: str) -> str:
    """A value fills a path segment, query value or host label; it cannot add URL structure."""
    return quote(value, safe="")


def _header_value(value: str) -> str:
    return _CONTROL.sub("", value)  # no CR/LF: a value must not start another header


@dataclass(frozen=True)
class ToolOutcome:
    """What one tool call gave: ``result`` is the body as JSON when it parses, else the text
    (None when empty); ``body`` is the text (the first 16 KiB); ``error`` is None only for a
    2xx."""

    status_code: int | None
    body: str
    result: Any
    latency_ms: int
    error: str | None
    truncated: bool = False

    @property
    def status(self) -> ToolStatus:
        if self.error is None:
            return "ok"
        if self.error == "timeout":
            return "timeout"
        if self.error.startswith("target_refused"):
            return "refused"
        return "error"


class HttpTool:
    """One configured HTTP tool for one call: its schema, the call's variables, a client."""

    def __init__(
        self, config: ToolConfig, variables: Mapping[str, Any], client: GuardedHttpClient
    ) -> None:
        self.config = config
        self._variables = dict(variables)
        self._client = client
        self._validator: Draft202012Validator | None = None
        self._misconfigured: str | None = None
        try:
            Draft202012Validator.check_schema(config.parameters)
        except SchemaError as exc:
            self._misconfigured = f"the parameters are not a valid JSON Schema: {exc.message}"
        else:  # $ref is resolved only inside the schema: nothing is fetched
            checker = Draft202012Validator.FORMAT_CHECKER
            self._validator = Draft202012Validator(config.parameters, format_checker=checker)

    @property
    def name(self) -> str:
        return self.config.name

    def check_arguments(self, arguments: Mapping[str, Any]) -> str | None:
        """None when ``arguments`` satisfy the schema, else what is wrong, naming the fields."""
        if self._validator is None:
            return None
        errors = sorted(self._validator.iter_errors(arguments), key=_error_order)
        if not errors:
            return None
        described = [_describe(error) for error in errors[:3]]
        if len(errors) > 3:
            described.append(f"and {len(errors) - 3} more")
        return "; ".join(described)

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolOutcome:
        if self._misconfigured is not None:
            return ToolOutcome(None, "", None, 0, f"tool_misconfigured: {self._misconfigured}")
        try:
            problem = self.check_arguments(arguments)
        except Unresolvable as exc:  # remote $refs are never fetched
            error = f"tool_misconfigured: a $ref in the parameters cannot be resolved: {exc}"
            return ToolOutcome(None, "", None, 0, _clip(error, 300))
        if problem is not None:
            return ToolOutcome(None, "", None, 0, f"invalid_arguments: {problem}")
        config = self.config
        url = substitute(config.url, self._variables, escape=_url_component)
        headers: CIMultiDict[str] = CIMultiDict(
            {"user-agent": USER_AGENT, "accept": "application/json, text/plain;q=0.9, */*;q=0.5"}
        )
        for name, value in config.headers.items():
            headers[name] = substitute(value, self._variables, escape=_header_value)
        query: list[tuple[str, str]] = []
        body: bytes | None = None
        if config.method in _QUERY_METHODS:
            query = _query_pairs(arguments)
        else:
            body = json.dumps(dict(arguments), ensure_ascii=False, default=str).encode()
            headers.setdefault("content-type", "application/json")
        response = await self._client.request(
            config.method,
            url,
            headers=headers,
            query=query,
            body=body,
            timeout_seconds=config.timeout_seconds,
            max_response_bytes=MAX_RESPONSE_BYTES,
        )
        return _outcome(response)


@dataclass(frozen=True)
class ToolInvocation:
    """One call of a tool by the LLM, for the ``call.tool_invoked`` signal.

    ``call_id`` is the LLM's function-call id and ``speech_id`` the LiveKit speech (turn) that
    made the call, when known.
    """

    name: str
    arguments: dict[str, Any]
    result: Any
    error: str | None
    latency_ms: int
    status_code: int | None
    status: ToolStatus
    call_id: str | None = None
    speech_id: str | None = None


def function_tools(
    tools: Sequence[ToolConfig],
    variables: Mapping[str, Any],
    client: GuardedHttpClient,
    on_invoked: Callable[[ToolInvocation], None],
) -> list[RawFunctionTool]:
    """One LiveKit function tool per configured HTTP tool, for one call."""
    return [_function_tool(HttpTool(tool, variables, client), on_invoked) for tool in tools]


def _function_tool(tool: HttpTool, on_invoked: Callable[[ToolInvocation], None]) -> RawFunctionTool:
    async def handler(raw_arguments: dict[str, object], ctx: RunContext) -> str:
        arguments = dict(raw_arguments)
        outcome = await tool.invoke(arguments)
        invocation = ToolInvocation(
            name=tool.name,
            arguments=arguments,
            result=outcome.result if outcome.error is None else None,
            error=outcome.error,
            latency_ms=outcome.latency_ms,
            status_code=outcome.status_code,
            status=outcome.status,
            call_id=ctx.function_call.call_id,
            speech_id=ctx.speech_handle.id,
        )
        try:
            on_invoked(invocation)
        except Exception:  # reporting must not change what the LLM hears
            log.exception("reporting an invocation of tool %s failed", tool.name)
        if outcome.error is not None:
            raise ToolError(_error_for_llm(tool, outcome))
        return _output_for_llm(outcome)

    schema = {
        "name": tool.config.name,
        "description": tool.config.description,
        "parameters": tool.config.parameters,
    }
    return function_tool(handler, raw_schema=schema)


def _outcome(response: HttpResponse) -> ToolOutcome:
    text = response.body.decode("utf-8", errors="replace")
    error = response.error
    if error is None and not response.ok:
        error = f"http_status: HTTP {response.status_code}"
        if text.strip():
            error += f": {_clip(text.strip(), 200)}"
    result: Any = text if text.strip() else None
    if not response.truncated and text.strip():
        try:
            result = json.loads(text)
        except ValueError:
            result = text
    return ToolOutcome(
        response.status_code, text, result, response.latency_ms, error, response.truncated
    )


def _output_for_llm(outcome: ToolOutcome) -> str:
    if not outcome.body.strip():
        return f"The request succeeded (HTTP {outcome.status_code}) with an empty response."
    if outcome.truncated:
        return outcome.body + f"\n[response truncated after {MAX_RESPONSE_BYTES} bytes]"
    return outcome.body


def _error_for_llm(tool: HttpTool, outcome: ToolOutcome) -> str:
    error = outcome.error or ""
    name = tool.name
    if error.startswith("invalid_arguments: "):
        return f"Invalid arguments for {name}: {error.removeprefix('invalid_arguments: ')}"
    if outcome.status == "timeout":
        return f"{name} did not answer within {tool.config.timeout_seconds:g} seconds."
    if outcome.status == "refused":
        return f"{name} cannot be called: its address is not allowed."
    if error.startswith("http_status: "):
        return f"{name} failed: {error.removeprefix('http_status: ')}"
    return f"{name} could not be reached."


def _query_pairs(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Scalars as they are, lists of scalars as repeated keys, anything else as JSON."""
    pairs: list[tuple[str, str]] = []
    for name, value in arguments.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is None:
                continue
            if isinstance(item, bool):
                pairs.append((name, "true" if item else "false"))
            elif isinstance(item, str | int | float):
                pairs.append((name, str(item)))
            else:
                pairs.append((name, json.dumps(item, ensure_ascii=False, separators=(",", ":"))))
    return pairs


def _error_order(error: ValidationError) -> tuple[int, str]:
    return (len(error.absolute_path), ".".join(str(p) for p in error.absolute_path))


def _describe(error: ValidationError) -> str:
    where = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [n for n in error.validator_value if n not in error.instance]
        names = ", ".join(f"`{where + '.' if where else ''}{n}`" for n in missing)
        return f"missing required argument {names}"
    message = _clip(error.message, 200)
    return f"argument `{where}`: {message}" if where else message


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
