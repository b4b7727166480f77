"""The scripted LLM: rules, tool calls, tool results, end_call, placeholders, usage."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession, RunContext, llm

from agent.providers.scripted_llm import ScriptedLLM, chunks
from domain.agent_config import LlmConfig, ScriptRule

pytestmark = pytest.mark.unit

SCRIPT = (
    ScriptRule(
        match=r"status of (my )?order (?P<order_id>[A-Z]-\d+)",
        tool="lookup_order",
        arguments={"order_id": "{{order_id}}", "customer": "{{customer_id}}", "n": 1},
        reply="{{name}}, order {{order_id}} is {{result.status}} (ETA {{result.eta.day}}).",
    ),
    ScriptRule(match=r"\bhours\b", reply="We are open nine to five, {{name}}."),
    ScriptRule(match=r"\b(bye|goodbye)\b", reply="Goodbye {{name}}!", end_call=True),
    ScriptRule(
        match=r"cancel (?P<order_id>\S+)",
        tool="cancel_order",
        arguments={"order_id": "{{order_id}}"},
        reply="Done: {{result}}",
        end_call=True,
    ),
)
CONFIG = LlmConfig(script=SCRIPT, fallback_reply="Sorry {{name}}, say that again?")
VARIABLES = {"name": "Ada", "customer_id": "C-42"}


def offered(*names: str) -> list[llm.Tool]:
    def make(name: str) -> llm.Tool:
        async def handler(raw_arguments: dict[str, object]) -> str:
            return ""

        schema = {"name": name, "description": name, "parameters": {"type": "object"}}
        return llm.function_tool(handler, raw_schema=schema)

    return [make(n) for n in names]


TOOLS = offered("lookup_order", "cancel_order", "end_call")


def run(
    model: ScriptedLLM, ctx: llm.ChatContext, tools: list[llm.Tool] | None = None, **kw: Any
) -> tuple[llm.CollectedResponse, list[llm.ChatChunk]]:
    async def go() -> tuple[llm.CollectedResponse, list[llm.ChatChunk]]:
        seen: list[llm.ChatChunk] = []
        async with model.chat(chat_ctx=ctx, tools=TOOLS if tools is None else tools, **kw) as s:
            async for chunk in s:
                seen.append(chunk)
        text = "".join(c.delta.content or "" for c in seen if c.delta)
        calls = [t for c in seen if c.delta for t in c.delta.tool_calls]
        usage = next((c.usage for c in seen if c.usage), None)
        return llm.CollectedResponse(text=text, tool_calls=calls, usage=usage), seen

    return asyncio.run(go())


def user_says(text: str, ctx: llm.ChatContext | None = None) -> llm.ChatContext:
    ctx = ctx or llm.ChatContext()
    if not ctx.items:
        ctx.add_message(role="system", content="You are a helpful shop assistant.")
    ctx.add_message(role="user", content=text)
    return ctx


def tool_ran(ctx: llm.ChatContext, call: llm.FunctionToolCall, output: str) -> llm.ChatContext:
    ctx.insert(llm.FunctionCall(call_id=call.call_id, name=call.name, arguments=call.arguments))
    ctx.insert(
        llm.FunctionCallOutput(call_id=call.call_id, name=call.name, output=output, is_error=False)
    )
    return ctx


def test_a_rule_with_a_tool_calls_it_with_substituted_arguments_and_says_nothing():
    model = ScriptedLLM(CONFIG, VARIABLES)
    response, _ = run(model, user_says("What is the status of my order A-17?"))
    assert response.text == ""
    [call] = response.tool_calls
    assert call.name == "lookup_order"
    assert json.loads(call.arguments) == {"order_id": "A-17", "customer": "C-42", "n": 1}
    assert call.call_id


def test_the_tool_result_fills_the_reply_of_the_rule_that_asked_for_it():
    model = ScriptedLLM(CONFIG, VARIABLES)
    ctx = user_says("status of order A-17 please")
    response, _ = run(model, ctx)
    result = json.dumps({"status": "shipped", "eta": {"day": "Friday"}})
    response, _ = run(model, tool_ran(ctx, response.tool_calls[0], result))
    assert response.text == "Ada, order A-17 is shipped (ETA Friday)."
    assert response.tool_calls == []


def test_a_reply_streams_in_several_chunks_and_reports_word_usage():
    model = ScriptedLLM(CONFIG, VARIABLES)
    ctx = user_says("what are your opening hours?")
    response, seen = run(model, ctx)
    assert response.text == "We are open nine to five, Ada."
    assert len([c for c in seen if c.delta and c.delta.content]) >= 2
    assert response.usage is not None
    assert response.usage.completion_tokens == 7
    # "You are a helpful shop assistant." + "what are your opening hours?"
    assert response.usage.prompt_tokens == 6 + 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + 7


def test_no_matching_rule_gets_the_fallback_reply():
    model = ScriptedLLM(CONFIG, VARIABLES)
    response, _ = run(model, user_says("Do you sell umbrellas?"))
    assert response.text == "Sorry Ada, say that again?"
    assert response.tool_calls == []


def test_silence_gets_the_fallback_reply():
    model = ScriptedLLM(CONFIG, VARIABLES)
    ctx = user_says("hours?")
    ctx.add_message(role="assistant", content="We are open nine to five, Ada.")
    assert run(model, ctx)[0].text == "Sorry Ada, say that again?"  # the agent spoke last
    assert run(model, llm.ChatContext())[0].text == "Sorry Ada, say that again?"
    assert run(model, user_says("   "))[0].text == "Sorry Ada, say that again?"


def test_end_call_is_called_after_the_reply_when_offered():
    model = ScriptedLLM(CONFIG, VARIABLES)
    response, seen = run(model, user_says("ok, bye"))
    assert response.text == "Goodbye Ada!"
    [call] = response.tool_calls
    assert call.name == "end_call"
    assert json.loads(call.arguments) == {}
    kinds = ["text" if c.delta.content else "tool" for c in seen if c.delta]
    assert kinds[-1] == "tool"  # the goodbye comes first


def test_end_call_is_not_called_when_the_session_does_not_offer_it():
    model = ScriptedLLM(CONFIG, VARIABLES)
    response, _ = run(model, user_says("bye"), tools=offered("lookup_order"))
    assert response.text == "Goodbye Ada!"
    assert response.tool_calls == []


def test_after_end_call_has_run_the_llm_stays_silent():
    model = ScriptedLLM(CONFIG, VARIABLES)
    ctx = user_says("bye")
    response, _ = run(model, ctx)
    ctx.add_message(role="assistant", content=response.text)
    response, _ = run(model, tool_ran(ctx, response.tool_calls[0], "say goodbye to the user"))
    assert response.text == ""
    assert response.tool_calls == []


def test_a_tool_rule_with_end_call_replies_with_the_raw_result_then_ends():
    model = ScriptedLLM(CONFIG, VARIABLES)
    ctx = user_says("please cancel B-9")
    first, _ = run(model, ctx)
    assert json.loads(first.tool_calls[0].arguments) == {"order_id": "B-9"}
    response, _ = run(model, tool_ran(ctx, first.tool_calls[0], "order B-9 cancelled"))
    assert response.text == "Done: order B-9 cancelled"
    assert [c.name for c in response.tool_calls] == ["end_call"]


def test_named_groups_override_variables_and_unknown_placeholders_are_empty():
    config = LlmConfig(
        script=(ScriptRule(match=r"i am (?P<name>\w+)", reply="Hi {{name}}{{nope}}!"),)
    )
    model = ScriptedLLM(config, {"name": "Ada"})
    assert run(model, user_says("I am Grace"))[0].text == "Hi Grace!"


def test_a_result_that_is_not_json_leaves_fields_empty():
    model = ScriptedLLM(CONFIG, VARIABLES)
    ctx = user_says("status of order A-1")
    first, _ = run(model, ctx)
    response, _ = run(model, tool_ran(ctx, first.tool_calls[0], "HTTP 500"))
    assert response.text == "Ada, order A-1 is  (ETA )."


def test_tool_outputs_it_did_not_ask_for_get_the_fallback():
    model = ScriptedLLM(CONFIG, VARIABLES)
    ctx = user_says("status of order A-1")
    foreign = llm.FunctionToolCall(name="lookup_order", arguments="{}", call_id="someone_else")
    response, _ = run(model, tool_ran(ctx, foreign, '{"status": "lost"}'))
    assert response.text == "Sorry Ada, say that again?"


def test_tool_rules_are_skipped_when_tools_are_not_allowed():
    model = ScriptedLLM(CONFIG, VARIABLES)
    response, _ = run(model, user_says("status of order A-1"), tool_choice="none")
    assert response.text == "Sorry Ada, say that again?"
    assert response.tool_calls == []


def test_the_reply_pieces_join_to_the_whole_reply():
    text = "  one two three four five six seven eight nine  "
    assert "".join(chunks(text)) == text
    assert len(chunks(text)) == 3
    assert chunks("") == []


def test_the_script_drives_a_real_agent_session_through_a_tool_call_and_end_call():
    invoked: list[object] = []

    # the framework reads these annotations, hence RunContext imported at module level
    async def lookup_order(raw_arguments: dict[str, object], ctx: RunContext) -> str:
        invoked.append(raw_arguments)
        return json.dumps({"status": "shipped", "eta": {"day": "Friday"}})

    async def end_call(ctx: RunContext) -> str:
        invoked.append("end_call")
        return "say goodbye to the user"

    schema = {"name": "lookup_order", "description": "Find an order.", "parameters": {}}
    tools = [
        llm.function_tool(lookup_order, raw_schema={**schema, "parameters": {"type": "object"}}),
        llm.function_tool(end_call, name="end_call", description="Hang up."),
    ]

    async def converse() -> tuple[list[tuple[str, str]], Any]:
        said: list[tuple[str, str]] = []
        async with AgentSession(llm=ScriptedLLM(CONFIG, VARIABLES)) as session:
            await session.start(Agent(instructions="Be brief.", tools=tools))
            for words in ("status of my order A-17", "thanks, bye"):
                result = await session.run(user_input=words)
                for ev in result.events:
                    item = ev.item
                    said.append((ev.type, item.text_content if ev.type == "message" else item.name))
            return said, session.usage

    said, usage = asyncio.run(converse())
    assert said == [
        ("function_call", "lookup_order"),
        ("function_call_output", "lookup_order"),
        ("message", "Ada, order A-17 is shipped (ETA Friday)."),
        ("message", "Goodbye Ada!"),
        ("function_call", "end_call"),
        ("function_call_output", "end_call"),
    ]
    assert invoked == [{"order_id": "A-17", "customer": "C-42", "n": 1}, "end_call"]
    [llm_usage] = usage.model_usage
    assert llm_usage.provider == "scripted" and llm_usage.output_tokens > 0
