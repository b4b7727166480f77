"""The call session's built-in pieces that need no room: the end_call tool binds the way the
framework calls tools, and ends the call after the current reply."""

from __future__ import annotations

import asyncio
import json

import pytest
from livekit.agents import RunContext, llm
from livekit.agents.llm.utils import prepare_function_arguments

from agent.call import CLOSE_REASONS, END_CALL_SCHEMA, CallSession

pytestmark = pytest.mark.unit


class Ended:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    async def _end(self, *args: object, **kwargs: object) -> None:
        self.calls.append((args, kwargs))


class Ctx(RunContext):
    def __init__(self) -> None:  # the tool needs none of the framework's context
        pass


def test_end_call_is_a_tool_the_framework_can_call_and_it_hangs_up_after_the_reply():
    session = Ended()
    tool = llm.function_tool(CallSession._end_call_handler(session), raw_schema=END_CALL_SCHEMA)
    args, kwargs = prepare_function_arguments(
        fnc=tool, json_arguments=json.dumps({"reason": "caller said goodbye"}), call_ctx=Ctx()
    )

    async def call() -> None:
        with pytest.raises(llm.StopResponse):  # no reply to a hang-up
            await tool(*args, **kwargs)
        await asyncio.sleep(0)

    asyncio.run(call())
    assert session.calls == [(("agent_hangup",), {"after_speech": True})]


def test_livekit_close_reasons_map_to_call_end_reasons():
    assert CLOSE_REASONS["participant_disconnected"] == "hangup"
    assert CLOSE_REASONS["error"] == "error"
