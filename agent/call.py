"""One call, from the job's dispatch to its end: the agent's configuration at the call's
version, dynamic variables from the pre-call hook, VAD + STT + LLM + TTS from the provider
registry, the HTTP tools and a built-in ``end_call`` tool, the first message, silence and
maximum-duration handling, signals for everything, the post-call hook, and a clean end."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from livekit.agents import Agent, AgentSession, JobContext, RunContext, llm

from adapters.livekit.rooms import CALL_TOPIC, CallRoom
from adapters.net.guard import TargetPolicy, TargetRefused, check_url
from adapters.net.http import GuardedHttpClient
from adapters.telephony.calls import CONSULTING_CHANNELS, NoPhoneLeg, transfer
from agent.callbacks import merge_variables, post_call, pre_call
from agent.keypad import Keypad
from agent.playback import PlaybackLink, YieldingAudioOutput
from agent.recorder import CallRecorder
from agent.signals import SignalEmitter
from agent.tools import ToolInvocation, function_tools, substitute
from agent.transfers import transfer_call_schema, voicemail_action
from commands.agents import Actor
from domain.agent_config import AgentConfig
from domain.errors import ProviderUnavailable

log = logging.getLogger(__name__)
SYSTEM_SUBJECT = "system:voice-worker"
CARRIERS = {  # a phone channel -> the (provider, model) its minutes are priced under
    "twilio_media_streams": ("twilio", "media_streams"),
    "voximplant": ("voximplant", "websocket"),
}
END_CALL_SCHEMA = {
    "name": "end_call",
    "description": "End the call (hang up) once you have said goodbye.",
    "parameters": {"type": "object", "properties": {
        "reason": {"type": "string", "description": "Why the call ends."}}},
}  # fmt: skip
CLOSE_REASONS = {  # LiveKit's CloseReason -> our call.ended reason, unless we chose one
    "participant_disconnected": "hangup",
    "user_initiated": "agent_hangup",
    "error": "error",
    "job_shutdown": "worker_shutdown",
    "task_completed": "agent_hangup",
}


class CallSession:
    def __init__(self, ctx: JobContext, deps: Any) -> None:
        self.ctx, self.deps = ctx, deps
        self.room = CallRoom.from_metadata(ctx.job.metadata)
        self.started_at = time.time()
        self.emitter = SignalEmitter(
            deps.producer, deps.worker_topic, space_id=self.room.space_id,
            call_id=self.room.call_id, job_id=ctx.job.id,
        )  # fmt: skip
        self.recorder = CallRecorder(self.emitter, self.started_at, time.time)
        self.reason: str | None = None
        self.silences = 0
        self.finished = asyncio.Event()
        self.ending = False
        self.tool_calls: list[dict[str, Any]] = []
        self.session: AgentSession[Any] | None = None
        self.http: GuardedHttpClient | None = None
        self.keypad: Keypad | None = None
        self.playback: PlaybackLink | None = None

    # -- the call -------------------------------------------------------------------------
    async def run(self) -> None:
        settings = self.deps.settings
        actor = Actor(space_id=self.room.space_id, subject=SYSTEM_SUBJECT)
        config: AgentConfig = await asyncio.to_thread(
            self.deps.container.agents.config_at, actor, UUID(self.room.agent_id),
            self.room.agent_config_version,
        )  # fmt: skip
        self.deps.registry.check(config)  # ProviderUnavailable: ends the call as an error
        policy = TargetPolicy.from_strings(
            settings.environment != "production", settings.worker.callback_allowed_networks
        )
        if config.llm.base_url:  # a self-hosted model's address is an operator's URL too
            try:
                check_url(config.llm.base_url, policy)
            except TargetRefused as exc:
                raise ProviderUnavailable(f"llm.base_url is refused: {exc}") from None
        self.http = GuardedHttpClient(policy)
        secret = settings.worker.callback_secret
        secret_text = secret.get_secret_value() if secret else None
        # the agent's defaults < the call's own (outbound API) < the pre-call hook's
        variables = merge_variables(config.variables, self.room.variables or {})
        if config.webhooks.pre_call_url:
            hook = await pre_call(config.webhooks.pre_call_url, self._identity(), self.http,
                                  secret_text)  # fmt: skip
            variables = merge_variables(variables, hook)
        self.variables, self.config = variables, config
        tools: list[Any] = function_tools(config.tools, variables, self.http, self._tool_invoked)
        tools.append(llm.function_tool(self._end_call_handler(), raw_schema=END_CALL_SCHEMA))
        if config.transfer_targets:
            schema = transfer_call_schema(config.transfer_targets)
            tools.append(llm.function_tool(self._transfer_call_handler(), raw_schema=schema))
        registry = self.deps.registry
        session: AgentSession[Any] = AgentSession(
            vad=registry.vad(), stt=registry.stt(config), llm=registry.llm(config, variables),
            tts=registry.tts(config), user_away_timeout=config.silence_timeout_seconds,
            aec_warmup_duration=None,
            turn_handling={"turn_detection": "vad",
                           "interruption": {"enabled": True, "mode": "vad", "min_duration": 0.4},
                           "endpointing": {"min_delay": 0.4, "max_delay": 3.0},
                           "preemptive_generation": {"enabled": False}},
        )  # fmt: skip
        self.session = session
        session.on("conversation_item_added", self._item_added)
        session.on("user_state_changed", self._user_state)
        session.on("close", self._closed)
        if self.room.channel != "web":  # a phone stream: keys, and the bridge's playback
            self.ctx.room.on("data_received", self._call_message)
            self.keypad = Keypad(self._keys_pressed)
            self.ctx.room.on("sip_dtmf_received", self._dtmf)
        agent = Agent(instructions=substitute(config.system_prompt, variables), tools=tools)
        await session.start(agent=agent, room=self.ctx.room, record=False)
        if self.keypad is not None and session.output.audio is not None:
            # the bridge hears at once when the agent yields, and which replies played in full
            self.playback = PlaybackLink(self.ctx.room, self.room.call_id)
            session.output.audio = YieldingAudioOutput(session.output.audio, self.playback)
        self.emitter.started()
        if config.first_message:
            session.say(substitute(config.first_message, variables))
        limit = asyncio.get_running_loop().call_later(
            config.max_call_duration_seconds,
            lambda: asyncio.ensure_future(self._say_and_end(settings.worker.goodbye,
                                                            "max_duration")),
        )  # fmt: skip
        try:
            await self.finished.wait()
        finally:
            limit.cancel()

    # -- session events -------------------------------------------------------------------
    def _item_added(self, event: Any) -> None:
        item = event.item
        if getattr(item, "type", None) != "message":
            return
        metrics = dict(getattr(item, "metrics", None) or {})
        text = item.text_content or ""
        if item.role == "assistant" and getattr(item, "interrupted", False):
            # cut off by the caller: the transcript keeps what they heard, once the bridge says
            turn_id = self.recorder.turn_id
            asyncio.ensure_future(self._record_cut(text, metrics, event.created_at, turn_id))
        else:
            self.recorder.message(item.role, text, metrics, event.created_at)
        if item.role == "assistant" and self.session is not None:
            self.recorder.usage(self.session.usage.model_usage)
        if item.role == "user":
            self.silences = 0  # the caller spoke: a later silence starts a new count

    async def _record_cut(self, text: str, metrics: dict[str, Any], created_at: float,
                          turn_id: str) -> None:  # fmt: skip
        if self.playback is not None:
            text = await self.playback.heard_text(text)
        self.recorder.message("assistant", text, metrics, created_at, interrupted=True,
                              turn_id=turn_id)  # fmt: skip

    def _user_state(self, event: Any) -> None:
        if event.new_state == "speaking":
            self.silences = 0
        if event.new_state != "away" or self.reason is not None or self.session is None:
            return
        self.silences += 1
        prompt = self.session.say(self.config.silence_prompt)
        asyncio.ensure_future(self._hang_up_if_still_silent(prompt, self.silences))

    async def _hang_up_if_still_silent(self, prompt: Any, silences: int) -> None:
        """The framework reports "away" once until the caller speaks again: after the prompt,
        a second silence as long as the first ends the call."""
        await prompt.wait_for_playout()
        await asyncio.sleep(self.config.silence_timeout_seconds)
        if self.silences == silences and self.reason is None:
            await self._end("silence")

    def _dtmf(self, event: Any) -> None:
        if self.keypad is None or self.reason is not None or not self.keypad.press(event.digit):
            return
        self.emitter.dtmf(event.digit, self.recorder.duration_ms())

    def _keys_pressed(self, text: str) -> None:
        if self.session is not None and self.reason is None:
            self.session.interrupt()
            self.session.generate_reply(user_input=text)

    def _tool_invoked(self, invocation: ToolInvocation) -> None:
        self.emitter.tool_invoked(
            self.recorder.turn_id, invocation.name, invocation.arguments, invocation.result,
            invocation.error, invocation.status, invocation.latency_ms,
        )  # fmt: skip
        self.tool_calls.append({"name": invocation.name, "arguments": invocation.arguments,
                                "status": invocation.status})  # fmt: skip

    def _end_call_handler(self) -> Any:
        """The built-in ``end_call`` tool: hang up once the current reply has been heard. (The
        framework binds arguments by these exact annotations, resolved in this module.)"""

        async def end_call(raw_arguments: dict[str, object], ctx: RunContext) -> None:
            asyncio.ensure_future(self._end("agent_hangup", after_speech=True))
            raise llm.StopResponse()

        return end_call

    def _transfer_call_handler(self) -> Any:
        """The built-in ``transfer_call`` tool: only to the agent's configured targets (the
        model picks a name, never a number). Warm, with a briefing: on a channel whose provider
        consults (``CONSULTING_CHANNELS``: the target answers while the caller holds, and is
        joined to the caller when the agent leaves) the transfer comes first, then the agent
        says the briefing to the human and leaves; elsewhere (Twilio: the caller goes straight
        to the target) the agent says the briefing to the caller first. The transfer runs
        through the same path as the API's transfer route."""

        async def transfer_call(raw_arguments: dict[str, object], ctx: RunContext) -> str:
            name = str(raw_arguments.get("target", ""))
            target = next((t for t in self.config.transfer_targets if t.name == name), None)
            if target is None:
                return f"There is no transfer target named {name!r}."
            briefing = None
            if target.mode == "warm" and target.briefing:
                briefing = substitute(target.briefing, self.variables)
            consults = target.mode == "warm" and self.room.channel in CONSULTING_CHANNELS
            if briefing and not consults:
                await self._say_now(briefing)
            actor = Actor(space_id=self.room.space_id, subject=SYSTEM_SUBJECT)
            try:
                _result, problem = await transfer(
                    self.deps.container, actor, UUID(self.room.call_id), target.destination,
                    target.mode,
                )  # fmt: skip
            except NoPhoneLeg:
                return "This call cannot be transferred (it is not a phone call)."
            if problem is not None:
                return f"The transfer did not go through ({problem}); stay with the caller."
            if briefing and consults:  # the human listens now, the caller on hold
                await self._say_now(briefing)
            asyncio.ensure_future(self._end("transferred"))
            raise llm.StopResponse()

        return transfer_call

    async def _say_now(self, text: str) -> None:
        """Say ``text`` (not interruptible) and wait until it has been heard."""
        if self.session is not None:
            handle = self.session.say(text, allow_interruptions=False)
            await handle.wait_for_playout()

    def _call_message(self, packet: Any) -> None:
        """What the API tells the worker about the phone leg (``CALL_TOPIC``): a machine
        answered -> the agent's voicemail policy."""
        if getattr(packet, "topic", None) != CALL_TOPIC or self.reason is not None:
            return
        action = voicemail_action(packet.data, self.config.voicemail)
        if action is None:
            return
        log.info("call %s: a machine answered; %s", self.room.call_id, action[0])
        if action[0] == "hang_up" or self.session is None:
            asyncio.ensure_future(self._end("voicemail"))
        else:
            message = substitute(action[1], self.variables)
            asyncio.ensure_future(self._say_and_end(message, "voicemail"))

    def _closed(self, event: Any) -> None:
        reason = getattr(event.reason, "value", str(event.reason))
        if self.reason is None:
            self.reason = CLOSE_REASONS.get(reason, reason)
        if getattr(event, "error", None) is not None:
            log.warning("call %s closed on an error: %r", self.room.call_id, event.error)
            self.reason = "error"
        asyncio.ensure_future(self._finish())

    # -- ending ---------------------------------------------------------------------------
    async def _say_and_end(self, text: str, reason: str) -> None:
        if self.session is not None and self.reason is None:
            self.session.interrupt()
            self.session.say(text, allow_interruptions=False)
        await self._end(reason, after_speech=True)

    async def _end(self, reason: str, after_speech: bool = False) -> None:
        if self.reason is not None or self.session is None:
            return
        self.reason = reason
        if after_speech:
            speech = self.session.current_speech
            if speech is not None:
                await speech.wait_for_playout()
        self.session.shutdown(drain=True)

    async def _finish(self) -> None:
        """Once: final usage, call.ended, the post-call hook, then the job and room go."""
        if self.ending:
            return
        self.ending = True
        try:
            await self._report_end()
        finally:
            self.finished.set()  # the job may now go: the post-call hook has been sent

    async def _report_end(self) -> None:
        if self.session is not None:
            self.recorder.usage(self.session.usage.model_usage)
        carrier = CARRIERS.get(self.room.channel)
        if carrier is not None:  # the phone leg, priced per second like the providers' bills
            seconds = round(self.recorder.duration_ms() / 1000, 3)
            self.emitter.usage(*carrier, "telephony_seconds", seconds)
        self.emitter.ended(self.reason or "hangup", self.recorder.duration_ms())
        config = getattr(self, "config", None)
        if config is not None and config.webhooks.post_call_url and self.http is not None:
            secret = self.deps.settings.worker.callback_secret
            await post_call(config.webhooks.post_call_url, self._summary(), self.http,
                            secret.get_secret_value() if secret else None)  # fmt: skip

    def _identity(self) -> dict[str, Any]:
        return {"call_id": self.room.call_id, "agent_id": self.room.agent_id,
                "space_id": self.room.space_id, "channel": self.room.channel,
                "room_name": self.room.room_name}  # fmt: skip

    def _summary(self) -> dict[str, Any]:
        ended = time.time()
        return {
            **self._identity(),
            "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat(),
            "ended_at": datetime.fromtimestamp(ended, UTC).isoformat(),
            "duration_seconds": round(ended - self.started_at, 3),
            "end_reason": self.reason, "transcript": self.recorder.transcript,
            "tool_calls": self.tool_calls,
        }  # fmt: skip

    async def fail(self, reason: str) -> None:
        """The call could not run (configuration, providers): record the end honestly."""
        self.reason = reason
        self.emitter.ended(reason, self.recorder.duration_ms())

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
