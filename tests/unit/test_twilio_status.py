"""Twilio's status callbacks as ``call.provider_status`` signals (a pure mapping), and which
number of a call is ours (the one routed and whose account verifies the webhook)."""

from __future__ import annotations

import uuid

import pytest

from adapters.api.twilio_webhooks import _ours, inbound_call_id, status_signal
from commands.signals import validate_signal

pytestmark = pytest.mark.unit
CALL = uuid.UUID("00000000-0000-4000-8000-000000000001")
SID = "CA" + "a" * 32


def form(**extra: str) -> dict[str, str]:
    return {
        "CallSid": SID,
        "AccountSid": "AC" + "b" * 32,
        "From": "+14155550100",
        "To": "+12025550123",
        "Direction": "outbound-api",
        "Timestamp": "Thu, 03 Dec 2026 21:08:39 +0000",
    } | extra


@pytest.mark.parametrize(
    ("twilio", "ours"),
    [
        ("queued", "queued"),
        ("initiated", "queued"),
        ("ringing", "ringing"),
        ("in-progress", "in-progress"),
        ("completed", "completed"),
        ("busy", "busy"),
        ("no-answer", "no-answer"),
        ("failed", "failed"),
        ("canceled", "canceled"),
    ],
)
def test_every_call_status_maps_to_a_valid_signal(twilio, ours):
    signal = status_signal("sp-1", CALL, form(CallStatus=twilio))
    assert signal is not None
    assert signal["status"] == ours and signal["signal_id"] == f"twilio:{SID}:{ours}"
    assert signal["at"] == "2026-12-03T21:08:39.000Z"
    parsed = validate_signal(signal)
    assert parsed.call_id == CALL and parsed.space_id == "sp-1"


@pytest.mark.parametrize(
    ("twilio", "ours"),
    [
        ("human", "human"),
        ("machine_start", "machine"),
        ("machine_end_beep", "machine"),
        ("machine_end_silence", "machine"),
        ("machine_end_other", "machine"),
        ("fax", "fax"),
        ("unknown", "unknown"),
        ("", None),
    ],
)
def test_answering_machine_detection_is_reduced_to_who_answered(twilio, ours):
    signal = status_signal("sp-1", CALL, form(CallStatus="in-progress", AnsweredBy=twilio))
    assert signal is not None and signal["answered_by"] == ours


def test_the_sip_code_is_kept_only_when_it_is_one():
    assert (
        status_signal("s", CALL, form(CallStatus="busy", SipResponseCode="486"))["sip_code"] == 486
    )
    for junk in ("", "abc", "99", "700"):
        signal = status_signal("s", CALL, form(CallStatus="failed", SipResponseCode=junk))
        assert signal["sip_code"] is None


def test_an_unknown_status_is_no_signal_and_a_bad_timestamp_is_now():
    assert status_signal("s", CALL, form(CallStatus="transmogrified")) is None
    assert status_signal("s", CALL, form(CallStatus="ringing", Timestamp="yesterday"))["at"]


def test_our_number_is_the_dialed_one_inbound_and_the_caller_id_outbound():
    assert _ours(form(Direction="inbound")) == "+12025550123"
    assert _ours(form(Direction="outbound-api")) == "+14155550100"
    assert _ours(form(Direction="inbound", To="not a number")) is None


def test_an_inbound_call_id_is_derived_from_the_account_and_call_sid():
    a = inbound_call_id("AC" + "b" * 32, SID)
    assert a == inbound_call_id("AC" + "b" * 32, SID)
    assert a != inbound_call_id("AC" + "c" * 32, SID)
