"""The agent's pre-call and post-call webhooks (``AgentConfig.webhooks``).

Both POST JSON through the guarded HTTP client (SSRF guard, no redirects, bounded answers) and,
when a secret is given, sign it with Standard Webhooks headers: ``webhook-id`` is
``<call id>:pre_call`` or ``<call id>:post_call``, the same on every retry, so a receiver can
drop duplicates. A call never fails because of these hooks: problems are logged as warnings
(the target's host and what went wrong; never the secret, headers, path or query) and
``pre_call`` returns no variables, ``post_call`` returns False.

The pre-call hook answers ``{"variables": {"name": "value", ...}}``; those become the call's
dynamic variables over the agent's defaults (``merge_variables``). Only string values with
names like ``customer_name`` or ``customer.tier`` are kept, at most ``MAX_VARIABLES`` of them,
each value at most ``MAX_VARIABLE_CHARS`` long; the rest is dropped with a warning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from yarl import URL

from adapters.net.http import GuardedHttpClient, HttpResponse
from adapters.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

USER_AGENT = "Voxagent-Callbacks/1"
MAX_VARIABLES = 100
MAX_VARIABLE_CHARS = 4096
MAX_PRE_CALL_RESPONSE_BYTES = 64 * 1024
POST_CALL_RETRY_DELAYS = (0.5, 2.0)  # seconds before the second and third attempt
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


async def pre_call(
    url: str,
    payload: dict[str, Any],
    client: GuardedHttpClient,
    secret: str | None,
    timeout: float = 5.0,
) -> dict[str, str]:
    """Ask the pre-call hook for this call's variables; {} whenever that does not work.

    ``payload`` is sent as the JSON body: ``call_id``, ``agent_id``, ``from_number``,
    ``to_number``, ``channel`` (the caller builds it; ``call_id`` also names the delivery).
    """
    where = _where(url)
    try:
        body = _encode(payload)
        headers = _headers(f"{payload.get('call_id', '')}:pre_call", body, secret)
        response = await client.request(
            "POST",
            url,
            headers=headers,
            body=body,
            timeout_seconds=timeout,
            max_response_bytes=MAX_PRE_CALL_RESPONSE_BYTES,
        )
        if not response.ok:
            log.warning(
                "pre-call webhook to %s failed (%s); using the agent's default variables",
                where, _problem(response, url),
            )  # fmt: skip
            return {}
        return _variables(response, where)
    except Exception as exc:  # a call never fails because its pre-call hook did
        log.warning(
            "pre-call webhook to %s failed (%s); using the agent's default variables",
            where, type(exc).__name__,
        )  # fmt: skip
        return {}


def merge_variables(defaults: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """The call's dynamic variables: the pre-call hook's over the agent's defaults."""
    return {**defaults, **overrides}


async def post_call(
    url: str,
    payload: dict[str, Any],
    client: GuardedHttpClient,
    secret: str | None,
    timeout: float = 10.0,
    *,
    retry_delays: Sequence[float] = POST_CALL_RETRY_DELAYS,
) -> bool:
    """Send the call summary; True once a 2xx came back. Never raises.

    ``payload`` is sent as the JSON body: ``call_id``, ``agent_id``, ``started_at``,
    ``ended_at``, ``duration_seconds``, ``end_reason``, ``transcript`` (turns), ``tool_calls``.
    A failure is retried after each of ``retry_delays`` (re-signed: a fresh timestamp), except a
    refused target or a 4xx other than 408/429, which would fail the same way again.
    """
    where = _where(url)
    problem = "not sent"
    try:
        body = _encode(payload)
        msg_id = f"{payload.get('call_id', '')}:post_call"
        for attempt, delay in enumerate((0.0, *retry_delays), start=1):
            if delay > 0:
                await asyncio.sleep(delay)
            response = await client.request(
                "POST",
                url,
                headers=_headers(msg_id, body, secret),
                body=body,
                timeout_seconds=timeout,
                max_response_bytes=4096,
            )
            if response.ok:
                return True
            problem = _problem(response, url)
            if not _worth_retrying(response):
                break
            log.info("post-call webhook to %s attempt %d failed (%s)", where, attempt, problem)
    except Exception as exc:  # a summary that cannot be sent must not break the worker
        problem = type(exc).__name__
    log.warning("post-call webhook to %s was not delivered (%s)", where, problem)
    return False


def _encode(payload: Mapping[str, Any]) -> bytes:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode()


def _headers(msg_id: str, body: bytes, secret: str | None) -> dict[str, str]:
    """Standard Webhooks headers when there is a secret (ValueError if it is malformed)."""
    if secret:
        headers = signed_headers(msg_id, int(time.time()), body, [secret])
        headers["user-agent"] = USER_AGENT
        return headers
    return {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": msg_id}


def _variables(response: HttpResponse, where: str) -> dict[str, str]:
    if not response.body.strip():
        return {}
    if response.truncated:
        log.warning(
            "pre-call webhook to %s answered more than %d bytes; ignoring its variables",
            where, MAX_PRE_CALL_RESPONSE_BYTES,
        )  # fmt: skip
        return {}
    try:
        document = json.loads(response.body)
    except ValueError:
        log.warning("pre-call webhook to %s did not answer JSON; ignoring it", where)
        return {}
    raw = document.get("variables") if isinstance(document, dict) else None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        log.warning("pre-call webhook to %s: `variables` is not an object; ignoring it", where)
        return {}
    kept: dict[str, str] = {}
    dropped = 0
    for name, value in raw.items():
        usable = (
            isinstance(value, str)
            and len(value) <= MAX_VARIABLE_CHARS
            and bool(_VARIABLE_NAME.match(name))
            and len(kept) < MAX_VARIABLES
        )
        if usable:
            kept[name] = value
        else:
            dropped += 1
    if dropped:
        log.warning(
            "pre-call webhook to %s: dropped %d of %d variables (string values only, at most "
            "%d of them, names like customer_name, values up to %d characters)",
            where, dropped, len(raw), MAX_VARIABLES, MAX_VARIABLE_CHARS,
        )  # fmt: skip
    return kept


def _worth_retrying(response: HttpResponse) -> bool:
    if response.error is not None:
        return not response.error.startswith(("target_refused", "invalid_request"))
    status = response.status_code or 0
    return not (400 <= status < 500) or status in (408, 429)


def _problem(response: HttpResponse, url: str) -> str:
    """What went wrong, without the URL's path or query (they may carry tokens)."""
    if response.error is None:
        return f"HTTP {response.status_code}"
    return response.error.replace(url, _where(url))


def _where(url: str) -> str:
    """Scheme, host and port only."""
    try:
        parsed = URL(url)
        return f"{parsed.scheme}://{parsed.host}" + (
            f":{parsed.explicit_port}" if parsed.explicit_port else ""
        )
    except (TypeError, ValueError):
        return "<invalid url>"
