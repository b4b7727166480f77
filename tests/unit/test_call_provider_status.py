"""The Call aggregate and the phone leg: provider statuses, unanswered ends, transfer outcomes
and per-call variables (given events -> when a command -> then events)."""

import uuid

import pytest
from eventsourcing.application import Application

from domain.calls import Call, InvalidSignal, ProviderCallMismatch

pytestmark = pytest.mark.unit

T0, T5, T9 = "2026-01-31T12:00:00.000Z", "2026-01-31T12:00:05.000Z", "2026-01-31T12:00:09.250Z"


def outbound_call(**overrides):
    fields = dict(
        space_id="space-a", agent_id=str(uuid.uuid4()), agent_config_version=1,
        direction="outbound", channel="twilio_media_streams", room_name="room-1", at=T0,
        from_number="+15550001", to_number="+15550002", call_id=uuid.uuid4(),
    )  # fmt: skip
    fields.update(overrides)
    return Call.initiate(**fields)


def status(call, value, at=T5, pcid="CA1", **extra):
    return call.record_provider_status(
        provider="twilio", provider_call_id=pcid, status=value, at=at,
        signal_id=f"twilio:{pcid}:{value}", **extra,
    )  # fmt: skip


def topics(call):
    return [type(e).TOPIC for e in call.collect_events()]


def test_provider_status_is_recorded_with_the_provider_call_id():
    call = outbound_call()
    call.collect_events()
    assert status(call, "ringing", sip_code=180)
    events = list(call.collect_events())
    assert [type(e).TOPIC for e in events] == ["call.provider_status_changed"]
    assert (events[0].status, events[0].sip_code) == ("ringing", 180)
    assert (call.provider, call.provider_call_id, call.provider_status) == (
        "twilio", "CA1", "ringing",
    )  # fmt: skip


@pytest.mark.parametrize(
    "value,reason",
    [("busy", "busy"), ("no-answer", "no_answer"), ("failed", "failed"),
     ("canceled", "canceled"), ("completed", "completed")],
)  # fmt: skip
def test_a_terminal_status_before_the_call_started_ends_it(value, reason):
    call = outbound_call()
    call.collect_events()
    assert status(call, value, at=T9)
    assert topics(call) == ["call.provider_status_changed", "call.ended"]
    assert (call.status, call.end_reason, call.duration_ms) == ("ended", reason, 9250)


def test_an_unanswered_leg_ends_the_call_even_when_the_worker_already_joined_the_room():
    call = outbound_call()
    call.start(at=T0, signal_id="s-start")  # the worker joined before the callee answered
    status(call, "ringing")
    call.collect_events()
    status(call, "busy", at=T9)
    assert topics(call) == ["call.provider_status_changed", "call.ended"]
    assert call.end_reason == "busy"


def test_completed_after_the_leg_was_answered_leaves_the_end_to_the_worker():
    call = outbound_call()
    call.start(at=T0, signal_id="s-start")
    status(call, "in-progress", answered_by="human")
    call.collect_events()
    assert status(call, "completed", at=T9)
    assert topics(call) == ["call.provider_status_changed"]
    assert call.status == "in_progress" and call.provider_status == "completed"
    assert call.end(reason="hangup", duration_ms=9000, at=T9, signal_id="w-end")


def test_statuses_after_the_end_repeats_and_older_ones_change_nothing():
    call = outbound_call()
    status(call, "in-progress")
    call.start(at=T5, signal_id="s-start")
    call.collect_events()
    assert not status(call, "ringing")  # late and older
    assert not status(call, "in-progress")  # repeated
    call.end(reason="hangup", duration_ms=1, at=T9, signal_id="w-end")
    call.collect_events()
    assert not status(call, "completed")  # after the end: nothing, and no error
    assert not status(call, "busy")
    assert topics(call) == []


def test_answered_by_is_recorded_once_detected():
    call = outbound_call()
    status(call, "in-progress")
    call.record_provider_status(
        provider="twilio", provider_call_id="CA1", status="in-progress", answered_by="machine",
        at=T5, signal_id="twilio:CA1:in-progress:machine",
    )  # fmt: skip
    assert call.answered_by == "machine"


def test_a_status_of_another_provider_call_is_refused():
    call = outbound_call()
    status(call, "queued")
    with pytest.raises(ProviderCallMismatch):
        status(call, "ringing", pcid="CA2")


@pytest.mark.parametrize(
    "kwargs",
    [{"status": "exploded"}, {"provider": "pigeon"}, {"answered_by": "robot"}],
)
def test_invalid_provider_values_are_refused(kwargs):
    call = outbound_call()
    fields = dict(provider="twilio", provider_call_id="CA1", status="queued", at=T5)
    with pytest.raises(InvalidSignal):
        call.record_provider_status(**{**fields, **kwargs})


def answered_call():
    call = outbound_call()
    call.start(at=T0, signal_id="s-start")
    call.request_transfer(mode="cold", target="+15559999", at=T5, signal_id="tr")
    call.collect_events()
    return call


@pytest.mark.parametrize(
    "kwargs,outcome,succeeded",
    [({"outcome": "busy"}, "busy", False), ({"succeeded": True}, "completed", True),
     ({"succeeded": False}, "failed", False), ({"outcome": "no-answer"}, "no-answer", False)],
)  # fmt: skip
def test_a_transfer_completes_with_its_outcome(kwargs, outcome, succeeded):
    call = answered_call()
    assert call.complete_transfer(**kwargs, reason="SIP 486", at=T9, signal_id="done")
    (event,) = call.collect_events()
    assert (event.outcome, event.succeeded, event.reason) == (outcome, succeeded, "SIP 486")
    assert call.transfer_outcome == outcome and call.status == "in_progress"


@pytest.mark.parametrize(
    "kwargs", [{}, {"outcome": "vanished"}, {"outcome": "busy", "succeeded": True}]
)
def test_a_transfer_outcome_must_be_known_and_consistent(kwargs):
    with pytest.raises(InvalidSignal):
        answered_call().complete_transfer(**kwargs, at=T9)


def test_per_call_variables_and_provider_state_survive_a_replay():
    call = outbound_call(variables={"customer_name": "Ada"})
    status(call, "in-progress", answered_by="human")
    call.start(at=T5, signal_id="s-start")
    call.request_transfer(mode="cold", target="+15559999", at=T5, signal_id="tr")
    call.complete_transfer(outcome="busy", at=T9, signal_id="done")
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.save(call)
    copy = app.repository.get(call.id)
    assert copy.__dict__ == call.__dict__
    assert copy.variables == {"customer_name": "Ada"} and copy.answered_by == "human"
    assert copy.transfer_outcome == "busy" and copy.provider_call_id == "CA1"


# -- ingest: the batch path of the Calls application ------------------------------------------
ENV = {"PERSISTENCE_MODULE": "tests.fakes.recorder"}


def provider_signal(call_id, value, **fields):
    from commands.signals import validate_signal

    data = {
        "type": "call.provider_status", "signal_id": f"twilio:CA1:{value}",
        "space_id": "space-a", "call_id": str(call_id), "at": T9, "source": "provider",
        "provider": "twilio", "provider_call_id": "CA1", "status": value, **fields,
    }  # fmt: skip
    return validate_signal(data)


def initiated(call_id, **fields):
    from commands.signals import validate_signal

    return validate_signal({
        "type": "call.initiated", "signal_id": f"{call_id}-0", "space_id": "space-a",
        "call_id": str(call_id), "at": T0, "source": "provider",
        "agent_id": str(uuid.uuid4()), "agent_config_version": 1, "direction": "outbound",
        "channel": "sip", "room_name": "r", **fields,
    })  # fmt: skip


def test_ingest_records_statuses_ends_unanswered_calls_and_skips_late_ones():
    from commands.calls import CallsApplication

    app = CallsApplication(env=ENV)
    a = uuid.uuid4()
    batch = [
        initiated(a, variables={"order": "A-1"}),
        provider_signal(a, "ringing", sip_code=180),
        provider_signal(a, "ringing", sip_code=180),  # the provider retried its callback
        provider_signal(a, "no-answer"),
        provider_signal(a, "completed"),  # after the end: skipped, not dead-lettered
    ]
    outcomes = app.apply_signals(batch)
    assert [(o.status, o.code) for o in outcomes] == [
        ("applied", None), ("applied", None), ("duplicate", None), ("applied", None),
        ("duplicate", None),
    ]  # fmt: skip
    kinds = [type(e).TOPIC for e in app.events.get(a)]
    assert kinds == [
        "call.initiated", "call.provider_status_changed", "call.provider_status_changed",
        "call.ended",
    ]  # fmt: skip
    call = app.repository.get(a)
    assert (call.end_reason, call.variables, call.channel) == ("no_answer", {"order": "A-1"}, "sip")
    app.close()
