"""The Twilio adapter's pure parts: the URLs it gives Twilio, how it reads Twilio's answers and
errors, the TwiML of a transfer, and the test server's signatures against Twilio's own
validator (the same algorithm, written twice, so each checks the other)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from adapters.telephony import twiml
from adapters.telephony.twilio import capabilities_of, provider_error, with_call_id
from tests.support.fake_twilio import signature

pytestmark = pytest.mark.unit


def test_our_call_id_rides_in_the_callback_urls_and_replaces_any_other():
    url = with_call_id("https://api.example.com/api/twilio/status?x=1&call_id=old", "c-1")
    parts = urlsplit(url)
    assert parts.path == "/api/twilio/status"
    assert parse_qs(parts.query) == {"x": ["1"], "call_id": ["c-1"]}


def test_capabilities_read_either_spelling_and_ignore_what_is_off():
    assert capabilities_of({"voice": True, "SMS": True, "MMS": False, "fax": False}) == [
        "voice",
        "sms",
    ]
    assert capabilities_of({"voice": False, "sms": True, "mms": True}) == ["sms", "mms"]
    assert capabilities_of(None) == []


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "provider_auth_failed"),
        (403, "provider_auth_failed"),
        (404, "provider_not_found"),
        (400, "provider_rejected"),
        (409, "provider_rejected"),
        (429, "provider_unreachable"),
        (500, "provider_unreachable"),
        (503, "provider_unreachable"),
    ],
)
def test_twilio_statuses_become_stable_codes(status, code):
    exc = TwilioRestException(status, "/2010-04-01/...", "Unable to create record", 21422)
    error = provider_error(exc, "buy +15550001111")
    assert error.code == code and error.status == status
    assert "buy +15550001111" in error.message


def test_network_failures_are_unreachable_and_name_no_secret():
    for exc in (requests.ConnectTimeout("secret-token"), requests.ConnectionError("secret-token")):
        error = provider_error(exc, "search numbers")
        assert error.code == "provider_unreachable"
        assert "secret-token" not in error.message


def test_a_cold_transfer_dials_a_number_or_a_sip_uri():
    number = ET.fromstring(twiml.dial_number("+15557654321"))
    assert number.find("./Dial/Number").text == "+15557654321"
    sip = ET.fromstring(twiml.dial_sip("sip:desk@pbx.example.com;transport=tcp"))
    assert sip.find("./Dial/Sip").text == "sip:desk@pbx.example.com;transport=tcp"
    assert sip.find("./Stream") is None and sip.find("./Connect") is None


def test_the_test_servers_signature_is_twilios():
    url = "https://api.example.com/api/twilio/status?call_id=abc"
    params = {
        "CallSid": "CA" + "a" * 32,
        "CallStatus": "ringing",
        "To": "+15550001111",
        "AccountSid": "AC" + "b" * 32,
        "Caller": "+1 555 (000)",
    }
    token = "0123456789abcdef0123456789abcdef"
    ours = signature(token, url, params)
    assert ours == RequestValidator(token).compute_signature(url, params)
    assert RequestValidator(token).validate(url, params, ours)
    assert not RequestValidator("another-token").validate(url, params, ours)
