"""Twilio's webhooks: a call's voice URL and its status callbacks, routed by the number dialed.

``POST /api/twilio/voice``: Twilio asks what to do with a call. An inbound call finds its
agent from ``To`` (``NumbersApplication.route``: the number's space and the agent assigned to
it), an outbound call we placed names our call in the URL (``?call_id=``, put there by the
adapter when it placed the call). The answer is TwiML connecting the call to the bridge, or a
polite ``<Say>`` and ``<Hangup>`` when the number is unknown, released or has no agent; such a
refusal is recorded (``number.call_refused`` in the number's space, once per CallSid) when the
number is one we know, only logged and counted when not (``adapters/telephony/refusals.py``).

``POST /api/twilio/status``: Twilio's status callbacks become ``call.provider_status`` signals
on the provider ingress topic; ingest turns them into call events. When answering-machine
detection says a machine answered a call we placed (``AnsweredBy`` on the voice request and on
the ``answered`` callback), the call's worker is told on the room's ``voxagent.call`` data
topic, and applies the agent's voicemail policy (it acts on the first word, once).

``POST /api/twilio/transfer``: the ``action`` of the ``<Dial>`` a transfer puts on the call;
Twilio posts the dialed leg's ``DialCallStatus`` there when that leg ends, and it becomes
the transfer's outcome (a ``call.transfer_completed`` signal).

Both are verified with ``X-Twilio-Signature``, keyed by the auth token of the Twilio account
the number belongs to: the number's space's account (``/api/telephony/accounts/twilio``) when
it has an auth token, else the deployment's ``telephony.twilio_auth_token``. Our number is
``To`` on an inbound call and ``From`` on one we placed, so it is routed first and the webhook
verified with that space's token; a number we do not know can only be verified with the
deployment's token (without one: 403, like a forged request).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import Counter
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError
from twilio.request_validator import RequestValidator

from adapters.api.call_rooms import open_call
from adapters.api.common import container_of
from adapters.api.errors import ApiError
from adapters.api.openapi import errors
from adapters.api.provider_signals import produce_signal
from adapters.api.telephony import stream_parameters
from adapters.livekit.rooms import CallRoom, LiveKitRooms
from adapters.services import Services
from adapters.telephony import twiml
from adapters.telephony.refusals import record_refusal
from commands.agents import Actor, AgentNotFound
from commands.call_commands import InitiateCall
from commands.calls import CallNotFound
from commands.numbers import NumberRoute
from commands.signals import SignalRejected, iso_ms, validate_signal
from domain.calls import Call
from domain.errors import AgentArchived, ProviderUnavailable
from domain.phone_numbers import InvalidPhoneNumber, normalise_e164
from domain.text import text_problem

log = logging.getLogger(__name__)
TWILIO_RETRY = "Twilio may retry the callback"
router = APIRouter(prefix="/api/twilio", tags=["telephony"])
TWILIO_SUBJECT = "system:twilio"
XML = "application/xml"
FORM = "application/x-www-form-urlencoded"
CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
# inbound calls get an id derived from Twilio's CallSid, so a status callback finds its call
TWILIO_CALLS = uuid.UUID("5d2c4f0e-7a51-4c8e-9a77-3f1f4f7b2c10")
# calls refused at the door, by reason (no call record can hold them: there is no agent; the
# refusals of numbers we know are recorded as number.call_refused)
REFUSED: Counter[str] = Counter()
# our reasons -> the recorded ones (call_not_found is a call we placed, not a number's refusal)
RECORDED_AS = {
    "unknown_number": "unknown_number", "provider_mismatch": "provider_mismatch",
    "no_agent": "number_unassigned", "unavailable": "agent_unavailable",
}  # fmt: skip
SORRY = {
    "unknown_number": "Sorry, this number is not in service. Goodbye.",
    "provider_mismatch": "Sorry, this number is not in service. Goodbye.",
    "no_agent": "Sorry, nobody is answering this number right now. Goodbye.",
    "unavailable": "Sorry, this number cannot take calls right now. Goodbye.",
    "call_not_found": "Sorry, this call cannot be connected. Goodbye.",
}
STATUSES = {
    "queued": "queued", "initiated": "queued", "ringing": "ringing",
    "in-progress": "in-progress", "completed": "completed", "busy": "busy",
    "no-answer": "no-answer", "failed": "failed", "canceled": "canceled",
}  # fmt: skip
ANSWERED_BY = {
    "human": "human", "machine_start": "machine", "machine_end_beep": "machine",
    "machine_end_silence": "machine", "machine_end_other": "machine", "fax": "fax",
    "unknown": "unknown",
}  # fmt: skip
TWIML = {"description": "TwiML: connect the call to the bridge, or say why not and hang up.",
         "content": {XML: {"schema": {"type": "string"}}}}  # fmt: skip
TWILIO_FORM = {"requestBody": {"required": True, "content": {FORM: {"schema": {
    "type": "object", "description": "Twilio's call parameters (it sends more).",
    "properties": {k: {"type": "string"} for k in (
        "CallSid", "AccountSid", "From", "To", "Direction", "CallStatus", "AnsweredBy",
        "SipResponseCode", "Timestamp")},
}}}}}  # fmt: skip
VERIFY = ("twilio_not_configured", "unsupported_media_type", "invalid_twilio_signature",
          "wrong_twilio_account", "invalid_call_sid", "invalid_form")  # fmt: skip
CALL_ID = Query(None, description="Our call's id, on the URLs of a call we placed.")


class StatusReceived(BaseModel):
    received: bool
    signals: int = Field(description="How many `call.provider_status` signals it became.")


def inbound_call_id(account_sid: str, call_sid: str) -> UUID:
    return uuid.uuid5(TWILIO_CALLS, f"{account_sid}:{call_sid}")


def _form(body: bytes) -> dict[str, str]:
    """A form body's fields; 400 ``invalid_form`` unless it is UTF-8 text our stores can hold
    (no NUL, no invalid percent-encoded UTF-8)."""
    try:
        fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_form", "The form body is not UTF-8 text.") from None
    for name, value in fields:
        why = text_problem(name) or text_problem(value)
        if why is not None:
            raise ApiError(400, "invalid_form", f"The form field {name!r} {why}.")
    return dict(fields)


def _signed_url(request: Request, public_api_url: str | None) -> str:
    if not public_api_url:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return public_api_url.rstrip("/") + request.url.path + query


def _ours(form: dict[str, str]) -> str | None:
    """Our number in the call, E.164: what was dialed on an inbound call, the caller id of
    one we placed."""
    raw = form.get("To") if form.get("Direction", "inbound") == "inbound" else form.get("From")
    try:
        return normalise_e164(raw or "")
    except InvalidPhoneNumber:
        return None


async def _verified(
    request: Request, signature: str | None
) -> tuple[dict[str, str], NumberRoute | None]:
    """The webhook's form and the route of our number in it, once the signature is checked
    with the right account's token (see the module's docstring); else an ``ApiError``."""
    container = container_of(request)
    settings = container.settings.telephony
    if not request.headers.get("content-type", "").startswith(FORM):
        raise ApiError(415, "unsupported_media_type", f"Twilio's webhooks are {FORM}.")
    form = _form(await request.body())
    number = _ours(form)
    route = await run_in_threadpool(container.numbers.route, number) if number else None
    token, account = None, None
    if route is not None:
        creds = await run_in_threadpool(container.numbers.credentials, route.space_id, "twilio")
        if creds is not None and creds.secrets.get("auth_token"):
            token, account = creds.secrets["auth_token"], creds.account_id
    if token is None and settings.twilio_auth_token is not None:
        token, account = settings.twilio_auth_token.get_secret_value(), settings.twilio_account_sid
    forged = ApiError(403, "invalid_twilio_signature", "X-Twilio-Signature does not match "
                      "this request.")  # fmt: skip
    if token is None:
        if route is None:  # the same answer as a forged request: it tells nothing about numbers
            raise forged
        raise ApiError(
            503,
            "twilio_not_configured",
            "The number's space has no Twilio account and telephony.twilio_auth_token is "
            "unset: nothing can verify Twilio.",
        )
    url = _signed_url(request, settings.public_api_url)
    if not signature or not RequestValidator(token).validate(url, form, signature):
        raise forged
    if account and form.get("AccountSid") != account:
        raise ApiError(403, "wrong_twilio_account", "The webhook is from another account.")
    if not CALL_SID.fullmatch(form.get("CallSid", "")):
        raise ApiError(400, "invalid_call_sid", "CallSid must be Twilio's CA... identifier.")
    return form, route


async def _refuse(
    container: Services, reason: str, form: dict[str, str], number: str | None
) -> Response:
    """The polite answer; the refusal recorded first when it is a number's (never raises)."""
    REFUSED[reason] += 1
    log.warning("Twilio call %s to %s refused: %s", form.get("CallSid"), number or "?", reason)
    recorded = RECORDED_AS.get(reason)
    if recorded is not None:
        await record_refusal(
            container, provider="twilio", e164=number, caller=form.get("From") or None,
            reason=recorded, provider_call_id=form["CallSid"],
        )  # fmt: skip
    return Response(twiml.refuse(SORRY[reason]), media_type=XML)


def _connect(container: Services, room: CallRoom) -> Response:
    parameters, _expires = stream_parameters(container, room)
    url = twiml.stream_url(container.settings.telephony.bridge_public_url, room.channel)
    return Response(twiml.connect_stream(url, parameters), media_type=XML)


async def _our_call(container: Services, route: NumberRoute | None, call_id: UUID) -> Call | None:
    if route is None:
        return None
    who = Actor(space_id=route.space_id, subject=TWILIO_SUBJECT)
    try:
        return await run_in_threadpool(container.calls.find_call, who, call_id)
    except CallNotFound:
        return None


@router.post("/voice", response_class=Response, responses={200: TWIML, **errors(*VERIFY)},
             openapi_extra=TWILIO_FORM)  # fmt: skip
async def twilio_voice(
    request: Request, call_id: UUID | None = CALL_ID,
    signature: str | None = Header(None, alias="X-Twilio-Signature"),
) -> Response:  # fmt: skip
    """Twilio's voice webhook: TwiML that connects the call to the agent answering the number
    dialed (an inbound call) or to our call (one we placed). Set a number's voice URL to
    ``https://<api>/api/twilio/voice`` (buying through our API does it)."""
    container = container_of(request)
    form, route = await _verified(request, signature)
    number = _ours(form)
    if call_id is not None:  # a call we placed: its room is open, the agent waits in it
        call = await _our_call(container, route, call_id)
        if call is None or call.ended_at is not None or call.channel != "twilio_media_streams":
            return await _refuse(container, "call_not_found", form, number)
        room = CallRoom(
            call_id=str(call.id), space_id=call.space_id, agent_id=call.agent_id,
            agent_config_version=call.agent_config_version, room_name=call.room_name,
            channel=call.channel,
        )  # fmt: skip
        if ANSWERED_BY.get(form.get("AnsweredBy", "")) == "machine":
            await machine_answered(container, call)
        return _connect(container, room)
    if route is None or route.status != "active":
        return await _refuse(container, "unknown_number", form, number)
    if route.provider != "twilio":
        return await _refuse(container, "provider_mismatch", form, number)
    if route.agent_id is None:
        return await _refuse(container, "no_agent", form, number)
    try:
        cmd = InitiateCall(
            agent_id=route.agent_id, direction="inbound", channel="twilio_media_streams",
            from_number=(form.get("From") or None), to_number=number,
            call_id=inbound_call_id(form["AccountSid"], form["CallSid"]),
        )  # fmt: skip
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", "Twilio's From or To cannot be taken: "
                       + "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors()),
                       ) from None  # fmt: skip
    who = Actor(space_id=route.space_id, subject=TWILIO_SUBJECT)
    try:  # Twilio retries a webhook: the CallSid makes the retry the same call
        _call, room, _replayed = await open_call(container, who, cmd, f"twilio-{form['CallSid']}")
    except (AgentNotFound, AgentArchived, ProviderUnavailable) as exc:
        log.warning("Twilio call %s to agent %s: %s", form["CallSid"], route.agent_id, exc)
        return await _refuse(container, "unavailable", form, number)
    return _connect(container, room)


def _moment(raw: str | None) -> str:
    try:
        moment = parsedate_to_datetime(raw or "")
    except (TypeError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        moment = datetime.now(UTC)
    return iso_ms(moment)


def status_signal(space_id: str, call_id: UUID, form: dict[str, str]) -> dict[str, Any] | None:
    """The ``call.provider_status`` signal of a status callback (None for a status we do not
    know: Twilio may add some)."""
    status = STATUSES.get(form.get("CallStatus", ""))
    if status is None:
        return None
    sip = form.get("SipResponseCode", "")
    return {
        "signal_id": f"twilio:{form['CallSid']}:{status}", "type": "call.provider_status",
        "space_id": space_id, "call_id": str(call_id), "at": _moment(form.get("Timestamp")),
        "source": "provider", "provider": "twilio", "provider_call_id": form["CallSid"],
        "status": status, "answered_by": ANSWERED_BY.get(form.get("AnsweredBy", "")),
        "sip_code": int(sip) if sip.isdigit() and 100 <= int(sip) <= 699 else None,
        "reason": form.get("ErrorMessage") or None,
    }  # fmt: skip


@router.post("/status", response_model=StatusReceived, openapi_extra=TWILIO_FORM,
             responses=errors(*VERIFY, "ingress_unavailable"))  # fmt: skip
async def twilio_status(
    request: Request, call_id: UUID | None = CALL_ID,
    signature: str | None = Header(None, alias="X-Twilio-Signature"),
) -> StatusReceived:  # fmt: skip
    """Twilio's status callbacks (queued, ringing, in-progress, completed, busy, no-answer,
    failed, canceled; answering-machine detection; the SIP response code) for calls on our
    numbers and calls we placed: each becomes a `call.provider_status` signal."""
    container = container_of(request)
    form, route = await _verified(request, signature)
    our_id = call_id or inbound_call_id(form["AccountSid"], form["CallSid"])
    call = await _our_call(container, route, our_id)
    signal = status_signal(call.space_id, call.id, form) if call is not None else None
    if call is None or signal is None:  # a call refused at the door, or a status we don't know
        log.info("Twilio status %s of %s taken as nothing", form.get("CallStatus"),
                 form["CallSid"])  # fmt: skip
        return StatusReceived(received=True, signals=0)
    try:
        validate_signal(signal)
    except SignalRejected as exc:
        raise ApiError(
            422, "invalid_request", f"Twilio's status cannot be taken: {exc.message}"
        ) from None
    await run_in_threadpool(produce_signal, container, signal, TWILIO_RETRY)
    if signal["status"] == "in-progress" and signal["answered_by"] == "machine":
        await machine_answered(container, call)
    return StatusReceived(received=True, signals=1)


async def machine_answered(container: Services, call: Call) -> None:
    """Tell the call's worker that a machine answered (its voicemail policy applies). Best
    effort: Twilio's webhook is answered whatever LiveKit says, and the status callback tells
    the worker again (it acts once)."""
    message = {"type": "answered_by", "value": "machine"}
    try:
        await LiveKitRooms(container.settings.livekit).tell_worker(call.room_name, message)
    except Exception as exc:  # noqa: BLE001 - the room may be gone, LiveKit away
        log.warning("call %s: could not tell the worker a machine answered: %r", call.id, exc)
    else:
        log.info("call %s: a machine answered; the worker was told", call.id)


# Twilio's DialCallStatus -> the transfer's outcome (a canceled dial did not go through)
DIAL_OUTCOMES = {
    "completed": "completed", "answered": "completed", "busy": "busy",
    "no-answer": "no-answer", "failed": "failed", "canceled": "failed",
}  # fmt: skip
NOT_TRANSFERRED = "Sorry, the person you are being transferred to cannot take the call. Goodbye."


def transfer_signal(space_id: str, call_id: UUID, form: dict[str, str]) -> dict[str, Any] | None:
    """The ``call.transfer_completed`` signal of a ``<Dial>`` action request (None for a
    ``DialCallStatus`` we do not know)."""
    status = form.get("DialCallStatus", "")
    outcome = DIAL_OUTCOMES.get(status)
    if outcome is None:
        return None
    leg = form.get("DialCallSid") or status
    reason = None if status == outcome else f"twilio: {status}"
    return {
        "signal_id": f"twilio:{form['CallSid']}:dial:{leg}"[:200],
        "type": "call.transfer_completed", "space_id": space_id, "call_id": str(call_id),
        "at": _moment(form.get("Timestamp")), "source": "provider", "outcome": outcome,
        "succeeded": outcome == "completed", "reason": reason,
    }  # fmt: skip


@router.post("/transfer", response_class=Response, openapi_extra=TWILIO_FORM,
             responses={200: TWIML, **errors(*VERIFY, "ingress_unavailable")})  # fmt: skip
async def twilio_transfer(
    request: Request, call_id: UUID | None = CALL_ID,
    signature: str | None = Header(None, alias="X-Twilio-Signature"),
) -> Response:  # fmt: skip
    """The ``action`` of a transfer's ``<Dial>``: Twilio reports the dialed leg's
    ``DialCallStatus`` (completed, answered, busy, no-answer, failed, canceled) when it ends,
    which becomes the transfer's outcome (``call.transfer_completed``). The TwiML answered
    ends the caller's call: at once after a transfer that went through, with an apology after
    one that did not (the agent left at the handover)."""
    container = container_of(request)
    form, route = await _verified(request, signature)
    our_id = call_id or inbound_call_id(form["AccountSid"], form["CallSid"])
    call = await _our_call(container, route, our_id)
    signal = transfer_signal(call.space_id, call.id, form) if call is not None else None
    if call is None or signal is None or call.provider_call_id != form["CallSid"]:
        log.info("Twilio dial status %s of %s taken as nothing", form.get("DialCallStatus"),
                 form["CallSid"])  # fmt: skip
        return Response(twiml.after_transfer(None), media_type=XML)
    try:
        validate_signal(signal)
    except SignalRejected as exc:
        raise ApiError(
            422, "invalid_request", f"Twilio's dial status cannot be taken: {exc.message}"
        ) from None
    await run_in_threadpool(produce_signal, container, signal, TWILIO_RETRY)
    went_through = signal["outcome"] == "completed"
    return Response(twiml.after_transfer(None if went_through else NOT_TRANSFERRED),
                    media_type=XML)  # fmt: skip
