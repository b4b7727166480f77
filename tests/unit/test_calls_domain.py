"""The Call aggregate: given events -> when a command -> then events (or a domain error)."""

import uuid

import pytest
from eventsourcing.application import Application

from domain.calls import Call, CallEnded, CallNotStarted, InvalidSignal

pytestmark = pytest.mark.unit

AT = "2026-01-31T12:00:00.000Z"


def new_call(**overrides):
    fields = dict(
        space_id="space-a",
        agent_id=str(uuid.uuid4()),
        agent_config_version=3,
        direction="inbound",
        channel="twilio_sip",
        room_name="room-1",
        at=AT,
        from_number="+15550001",
        to_number="+15550002",
        signal_id="s-init",
        call_id=uuid.uuid4(),
    )
    fields.update(overrides)
    return Call.initiate(**fields)


def started_call():
    call = new_call()
    call.start(at=AT, signal_id="s-start")
    return call


def topics(call):
    return [type(e).TOPIC for e in call.collect_events()]


def test_initiated_call_remembers_agent_version_numbers_and_first_signal():
    call = new_call()
    assert call.status == "initiated" and call.agent_config_version == 3
    assert call.from_number == "+15550001" and call.to_number == "+15550002"
    assert call.seen("s-init")
    assert topics(call) == ["call.initiated"]


@pytest.mark.parametrize(
    "field,value", [("direction", "sideways"), ("channel", "pigeon")], ids=["direction", "channel"]
)
def test_initiation_refuses_unknown_direction_or_channel(field, value):
    with pytest.raises(InvalidSignal, match=field):
        new_call(**{field: value})


def test_start_moves_the_call_in_progress_once():
    call = new_call()
    assert call.start(at=AT, signal_id="a")
    assert call.status == "in_progress" and call.started_at == AT
    assert not call.start(at=AT, signal_id="b")  # answered once; a second report is harmless
    assert topics(call) == ["call.initiated", "call.started"]


def test_nothing_is_added_after_the_end():
    call = started_call()
    assert call.end(reason="hangup", duration_ms=1000, at=AT, signal_id="end")
    with pytest.raises(CallEnded):
        call.add_transcript(
            turn_id="t1", speaker="user", text="hi", start_ms=0, end_ms=1, at=AT, signal_id="x"
        )
    with pytest.raises(CallEnded):
        call.record_usage(
            provider="p", model="m", kind="stt_seconds", quantity=1, at=AT, signal_id="y"
        )
    with pytest.raises(CallEnded):
        call.start(at=AT, signal_id="z")
    with pytest.raises(CallEnded):
        call.receive_dtmf(digit="1", offset_ms=1200, at=AT, signal_id="k")
    assert call.status == "ended" and call.end_reason == "hangup" and call.duration_ms == 1000


def test_the_end_happens_once():
    call = started_call()
    call.end(reason="hangup", duration_ms=1000, at=AT, signal_id="end-1")
    with pytest.raises(CallEnded):
        call.end(reason="error", duration_ms=5, at=AT, signal_id="end-2")


def test_a_transfer_needs_a_started_call():
    call = new_call()
    with pytest.raises(CallNotStarted):
        call.request_transfer(mode="warm", target="+15559999", at=AT, signal_id="tr")


def test_transfer_requested_then_completed_names_the_target():
    call = started_call()
    call.request_transfer(mode="cold", target="+15559999", at=AT, signal_id="tr")
    assert call.status == "transferring"
    call.complete_transfer(succeeded=True, at=AT, signal_id="tc")
    completed = call.collect_events()[-1]
    assert (completed.mode, completed.target, completed.succeeded) == ("cold", "+15559999", True)
    assert call.status == "in_progress"


def test_completing_a_transfer_that_was_never_requested_is_invalid():
    with pytest.raises(InvalidSignal):
        started_call().complete_transfer(succeeded=True, at=AT, signal_id="tc")


def test_a_key_press_is_recorded_once_per_signal():
    call = started_call()
    assert call.receive_dtmf(digit="4", offset_ms=1200, at=AT, signal_id="k1")
    assert call.receive_dtmf(digit="#", offset_ms=1450, at=AT, signal_id="k2")
    assert not call.receive_dtmf(digit="4", offset_ms=1200, at=AT, signal_id="k1")  # re-sent
    pressed = [e for e in call.collect_events() if type(e).TOPIC == "call.dtmf_received"]
    assert [(e.digit, e.offset_ms, e.at, e.signal_id) for e in pressed] == [
        ("4", 1200, AT, "k1"), ("#", 1450, AT, "k2")
    ]  # fmt: skip
    assert call.status == "in_progress"


def test_a_duplicate_signal_changes_nothing_even_after_the_end():
    call = started_call()
    kwargs = dict(turn_id="t1", speaker="user", text="hi", start_ms=0, end_ms=10, at=AT)
    assert call.add_transcript(**kwargs, signal_id="tx")
    assert not call.add_transcript(**kwargs, signal_id="tx")
    call.end(reason="hangup", duration_ms=10, at=AT, signal_id="end")
    assert not call.add_transcript(**kwargs, signal_id="tx")  # seen: no error, no event
    assert not call.end(reason="hangup", duration_ms=10, at=AT, signal_id="end")
    assert topics(call).count("call.transcript_added") == 1


@pytest.mark.parametrize(
    "method,kwargs",
    [
        ("add_transcript", dict(turn_id="t", speaker="bot", text="", start_ms=0, end_ms=0)),
        ("add_transcript", dict(turn_id="t", speaker="user", text="", start_ms=5, end_ms=1)),
        ("record_usage", dict(provider="p", model="m", kind="minutes", quantity=1)),
        ("record_usage", dict(provider="p", model="m", kind="stt_seconds", quantity=-1)),
        (
            "invoke_tool",
            dict(name="x", arguments={}, result=None, error=None, status="meh", latency_ms=1),
        ),
        ("request_transfer", dict(mode="lukewarm", target="x")),
        ("receive_dtmf", dict(digit="E", offset_ms=0)),
        ("receive_dtmf", dict(digit="12", offset_ms=0)),
        ("receive_dtmf", dict(digit="1", offset_ms=-1)),
        ("end", dict(reason="hangup", duration_ms=-1)),
    ],
)
def test_invalid_values_are_refused_with_invalid_signal(method, kwargs):
    call = started_call()
    with pytest.raises(InvalidSignal):
        getattr(call, method)(**kwargs, at=AT, signal_id="bad")
    assert not call.seen("bad")


def test_replaying_the_events_rebuilds_the_same_state():
    call = started_call()
    call.add_transcript(
        turn_id="t1", speaker="user", text="hi", start_ms=0, end_ms=9, at=AT, signal_id="tx"
    )
    call.invoke_tool(
        name="lookup",
        arguments={"id": 1},
        result={"ok": True},
        error=None,
        status="ok",
        latency_ms=12,
        at=AT,
        turn_id="t1",
        signal_id="tool",
    )
    call.receive_dtmf(digit="0", offset_ms=2500, at=AT, signal_id="key")
    call.request_transfer(mode="warm", target="sales", at=AT, signal_id="tr")
    call.record_usage(
        provider="deepgram", model="nova", kind="stt_seconds", quantity=1.5, at=AT, signal_id="u"
    )
    call.record_turn_metrics(turn_id="t1", stt_final_ms=120, at=AT, signal_id="m")
    call.end(reason="hangup", duration_ms=9000, at=AT, signal_id="end")
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.save(call)
    copy = app.repository.get(call.id)
    assert copy.__dict__ == call.__dict__
    assert copy.signals == {"s-init", "s-start", "tx", "tool", "key", "tr", "u", "m", "end"}
    assert copy.status == "ended" and copy.transfer == "warm:sales"
