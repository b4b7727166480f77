"""The worker's side of transfers and answering machines, as pure helpers: the
``transfer_call`` tool's schema (only the agent's configured targets, by name) and what to do
when the API reports that a machine answered (``CALL_TOPIC`` messages)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from domain.agent_config import TransferTarget, VoicemailPolicy


def transfer_call_schema(targets: Sequence[TransferTarget]) -> dict[str, Any]:
    """The tool the LLM sees: one ``target`` argument, an enum of the configured names (with
    their descriptions), so a model can never name a number of its own."""
    lines = [f"- {t.name}: {t.description or t.mode + ' transfer'}" for t in targets]
    return {
        "name": "transfer_call",
        "description": "Transfer the caller to a human or another line. Targets:\n"
        + "\n".join(lines),
        "parameters": {
            "type": "object",
            "properties": {"target": {"type": "string", "enum": [t.name for t in targets]}},
            "required": ["target"],
        },
    }


def voicemail_action(payload: bytes, policy: VoicemailPolicy) -> tuple[str, str] | None:
    """``("hang_up", "")`` or ``("leave_message", text)`` when ``payload`` says a machine
    answered; None for anything else (a human, another message, garbage)."""
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict) or message.get("type") != "answered_by":
        return None
    if message.get("value") != "machine":
        return None
    if policy.action == "leave_message":
        return ("leave_message", policy.message)
    return ("hang_up", "")
