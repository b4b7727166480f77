"""The Twilio adapter with the real ``twilio`` SDK against a local server that speaks Twilio's
REST wire format (tests/support/fake_twilio.py): numbers searched, bought with our webhooks,
released; calls placed with our callback URLs, transferred, hung up; every failure a
``ProviderError`` with a stable code."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from adapters.telephony.twilio import TwilioProvider
from commands.telephony import (
    CallbackUrls,
    NumberQuery,
    OutboundCall,
    ProviderCredentials,
    ProviderError,
)
from infra.settings import TelephonySettings
from tests.support.fake_twilio import FakeTwilio

pytestmark = pytest.mark.integration
URLS = CallbackUrls(
    "https://api.example.com/api/twilio/voice", "https://api.example.com/api/twilio/status"
)


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio(deliver=lambda url, form, headers: (200, "<Response/>")).start()
    server.offer("+14155550100")
    server.offer("+14155550123")
    server.offer("+12125550142", locality="New York", region="NY", sms=False)
    yield server
    server.stop()


@pytest.fixture
def provider(fake: FakeTwilio) -> TwilioProvider:
    return TwilioProvider(TelephonySettings(twilio_api_base_url=fake.base_url))


@pytest.fixture
def creds(fake: FakeTwilio) -> ProviderCredentials:
    return ProviderCredentials("twilio", fake.account.sid, {"auth_token": fake.account.auth_token})


def test_search_filters_by_area_code_and_pattern_and_reads_capabilities(provider, creds, fake):
    local = provider.search(creds, NumberQuery(country="US", area_code="212"))
    assert [n.e164 for n in local] == ["+12125550142"]
    assert local[0].locality == "New York" and local[0].region == "NY"
    assert local[0].capabilities == ["voice"] and local[0].country == "US"
    pattern = provider.search(creds, NumberQuery(country="US", contains="555*123"))
    assert [n.e164 for n in pattern] == ["+14155550123"]
    assert len(provider.search(creds, NumberQuery(country="US", limit=2))) == 2
    assert provider.search(creds, NumberQuery(country="GB")) == []
    _, path, _ = fake.requests[-1]
    assert path == f"/2010-04-01/Accounts/{fake.account.sid}/AvailablePhoneNumbers/GB/Local.json"


def test_buy_points_the_number_at_our_webhooks_and_release_deletes_it(provider, creds, fake):
    bought = provider.buy(creds, "+14155550100", URLS)
    assert re.fullmatch(r"PN[0-9a-f]{32}", bought.provider_id)
    assert bought.e164 == "+14155550100" and bought.capabilities == ("voice", "sms")
    number = fake.numbers[bought.provider_id]
    assert number["voice_url"] == URLS.voice_url and number["voice_method"] == "POST"
    assert number["status_callback"] == URLS.status_url
    assert number["status_callback_method"] == "POST"
    assert "+14155550100" not in [n.e164 for n in provider.search(creds, NumberQuery(country="US"))]

    provider.release(creds, bought.provider_id)
    assert bought.provider_id not in fake.numbers
    with pytest.raises(ProviderError) as gone:
        provider.release(creds, bought.provider_id)
    assert gone.value.code == "provider_not_found" and gone.value.status == 404


def test_buying_a_number_no_longer_on_sale_is_rejected(provider, creds):
    provider.buy(creds, "+14155550100", URLS)
    with pytest.raises(ProviderError) as taken:
        provider.buy(creds, "+14155550100", URLS)
    assert taken.value.code == "provider_rejected" and "21422" in taken.value.message


def test_an_api_key_works_like_the_auth_token(provider, fake):
    key, secret = fake.api_key()
    keyed = ProviderCredentials(
        "twilio", fake.account.sid, {"api_key_sid": key, "api_key_secret": secret}
    )
    assert len(provider.search(keyed, NumberQuery(country="US"))) == 3


@pytest.mark.parametrize(
    "secrets",
    [{"auth_token": "not-the-token"}, {"api_key_sid": "SK" + "0" * 32, "api_key_secret": "x"}],
)
def test_bad_credentials_are_provider_auth_failed_and_never_echoed(provider, fake, secrets):
    bad = ProviderCredentials("twilio", fake.account.sid, secrets)
    for attempt in (
        lambda: provider.search(bad, NumberQuery(country="US")),
        lambda: provider.buy(bad, "+14155550100", URLS),
    ):
        with pytest.raises(ProviderError) as refused:
            attempt()
        assert refused.value.code == "provider_auth_failed" and refused.value.status == 401
        assert all(secret not in refused.value.message for secret in secrets.values())
    assert fake.numbers == {}


def test_credentials_without_a_secret_are_refused_before_any_request(provider, fake):
    empty = ProviderCredentials("twilio", fake.account.sid, {})
    with pytest.raises(ProviderError) as refused:
        provider.search(empty, NumberQuery(country="US"))
    assert refused.value.code == "provider_auth_failed"
    assert fake.requests == []


def test_a_twilio_that_is_down_is_unreachable(creds):
    fake = FakeTwilio().start()
    base = fake.base_url
    fake.stop()
    down = TwilioProvider(TelephonySettings(twilio_api_base_url=base, twilio_timeout_seconds=2))
    with pytest.raises(ProviderError) as unreachable:
        down.search(creds, NumberQuery(country="US"))
    assert unreachable.value.code == "provider_unreachable"


def outbound(fake: FakeTwilio, **extra) -> OutboundCall:
    return OutboundCall(
        call_id=uuid.uuid4(), from_e164="+14155550100", to_e164="+12025550123", urls=URLS, **extra
    )


def test_a_placed_call_reports_every_progress_event_to_our_urls(provider, creds, fake):
    provider.buy(creds, "+14155550100", URLS)
    call = outbound(fake, machine_detection=True, timeout_seconds=25)
    placed = provider.place_call(creds, call)
    state = fake.calls[placed.provider_call_id]
    assert state["url"] == f"{URLS.voice_url}?call_id={call.call_id}"
    assert state["status_callback"] == f"{URLS.status_url}?call_id={call.call_id}"
    assert state["events"] == {"initiated", "ringing", "answered", "completed"}
    assert state["machine_detection"] == "DetectMessageEnd" and state["timeout"] == "25"
    assert "agent" not in state["url"] and "agent" not in state["status_callback"]
    plain = provider.place_call(creds, outbound(fake))
    assert fake.calls[plain.provider_call_id]["machine_detection"] is None


def test_calls_from_a_number_not_in_the_account_are_rejected(provider, creds):
    with pytest.raises(ProviderError) as refused:
        provider.place_call(creds, outbound(None))
    assert refused.value.code == "provider_rejected" and "21210" in refused.value.message


def test_transfer_redirects_the_answered_call_to_dial_and_hang_up_ends_it(provider, creds, fake):
    provider.buy(creds, "+14155550100", URLS)
    sid = provider.place_call(creds, outbound(fake)).provider_call_id
    with pytest.raises(ProviderError) as early:  # Twilio: not in progress, cannot redirect
        provider.transfer(creds, sid, "+15559990000", "cold")
    assert early.value.code == "provider_rejected" and "21220" in early.value.message
    fake.ring(sid)
    fake.answer(sid)
    provider.transfer(creds, sid, "+15559990000", "cold")
    provider.transfer(creds, sid, "sip:desk@pbx.example.com", "warm")
    assert [(t.kind, t.target) for t in fake.transfers] == [
        ("number", "+15559990000"),
        ("sip", "sip:desk@pbx.example.com"),
    ]
    with pytest.raises(ProviderError) as nonsense:
        provider.transfer(creds, sid, "desk 4", "cold")
    assert nonsense.value.code == "provider_rejected" and len(fake.transfers) == 2

    provider.hang_up(creds, sid)
    assert fake.calls[sid]["resource"]["status"] == "completed"
    with pytest.raises(ProviderError) as unknown:
        provider.hang_up(creds, "CA" + "0" * 32)
    assert unknown.value.code == "provider_not_found"
