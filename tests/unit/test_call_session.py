"""The call session's built-in pieces that need no room: the end_call tool binds the way the
framework calls tools, and ends the call after the current reply; the transfer_call tool
briefs a warm transfer's human after the transfer (consulting providers) or the caller before
it (Twilio)."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace

import pytest
from livekit.agents import RunContext, llm
from livekit.agents.llm.utils import prepare_function_arguments

import agent.call as call_module
from agent.call import CLOSE_REASONS, END_CALL_SCHEMA, CallSession
from domain.agent_config import TransferTarget

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


class Speech:
    def __init__(self, log: list[str], text: str) -> None:
        self.log, self.text = log, text

    async def wait_for_playout(self) -> None:
        self.log.append(f"heard: {self.text}")


class Voice:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def say(self, text: str, allow_interruptions: bool = True) -> Speech:
        self.log.append(f"say: {text}")
        return Speech(self.log, text)


class Transferring(Ended):
    """What the transfer tool needs of a CallSession: its config, room, session, _end."""

    def __init__(self, channel: str, log: list[str], mode: str = "warm") -> None:
        super().__init__()
        self.log = log
        self.config = SimpleNamespace(transfer_targets=[TransferTarget(
            name="desk", destination="sip:desk@10.0.0.9:5090", mode=mode,
            briefing="A caller needs help with order {{order}}.")])  # fmt: skip
        self.variables = {"order": "42"}
        self.room = SimpleNamespace(channel=channel, space_id=str(uuid.uuid4()),
                                    call_id=str(uuid.uuid4()))  # fmt: skip
        self.deps = SimpleNamespace(container=None)
        self.session = Voice(log)

    async def _end(self, *args: object, **kwargs: object) -> None:
        self.log.append(f"end: {args[0]}")
        await super()._end(*args, **kwargs)

    _say_now = CallSession._say_now


def run_transfer(monkeypatch: pytest.MonkeyPatch, channel: str, problem: str | None = None,
                 mode: str = "warm") -> tuple[list[str], str | None]:  # fmt: skip
    log: list[str] = []

    async def transfer(container, actor, call_id, destination, mode):  # noqa: ANN001, ANN202
        log.append(f"transfer: {mode} {destination}")
        return None, problem

    monkeypatch.setattr(call_module, "transfer", transfer)
    session = Transferring(channel, log, mode)
    tool = CallSession._transfer_call_handler(session)

    async def call() -> str | None:
        try:
            return await tool({"target": "desk"}, Ctx())
        except llm.StopResponse:
            await asyncio.sleep(0)  # the end runs
            return None

    return log, asyncio.run(call())


@pytest.mark.parametrize("channel", ["sip", "voximplant"])
def test_a_warm_transfer_that_consults_briefs_the_human_after_the_transfer_then_leaves(
    monkeypatch: pytest.MonkeyPatch, channel: str
) -> None:
    log, answer = run_transfer(monkeypatch, channel)
    assert answer is None
    assert log == [
        "transfer: warm sip:desk@10.0.0.9:5090",
        "say: A caller needs help with order 42.",
        "heard: A caller needs help with order 42.",
        "end: transferred",
    ]


def test_a_warm_transfer_on_twilio_briefs_the_caller_first(monkeypatch: pytest.MonkeyPatch):
    log, _ = run_transfer(monkeypatch, "twilio_media_streams")
    assert log == [
        "say: A caller needs help with order 42.",
        "heard: A caller needs help with order 42.",
        "transfer: warm sip:desk@10.0.0.9:5090",
        "end: transferred",
    ]


def test_a_consult_that_fails_keeps_the_agent_with_the_caller_and_says_no_briefing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log, answer = run_transfer(monkeypatch, "sip", problem="transfer_failed")
    assert log == ["transfer: warm sip:desk@10.0.0.9:5090"]
    assert answer == "The transfer did not go through (transfer_failed); stay with the caller."


def test_a_cold_transfer_says_nothing(monkeypatch: pytest.MonkeyPatch):
    log, _ = run_transfer(monkeypatch, "sip", mode="cold")
    assert log == ["transfer: cold sip:desk@10.0.0.9:5090", "end: transferred"]
