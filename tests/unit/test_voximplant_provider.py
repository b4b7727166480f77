"""The VoxImplant adapter drives the official ``voximplant-apiclient`` against a local server
that speaks VoxImplant's Management API wire format and checks the client's RS256 JWT with the
public half of a key pair made for the test."""

from __future__ import annotations

import json
import uuid

import pytest

from adapters.telephony.voximplant import VoximplantProvider, route_token, tokens_match
from commands.telephony import CallbackUrls, NumberQuery, OutboundCall, ProviderError
from infra.settings import TelephonySettings
from tests.support.fake_voximplant import FakeVoximplant, key_pair

pytestmark = pytest.mark.unit
URLS = CallbackUrls("https://api.example.com/api/voximplant/route",
                    "https://api.example.com/api/voximplant/status")  # fmt: skip


@pytest.fixture
def vox():
    fake = FakeVoximplant().start()
    fake.add_region("US", "GEOGRAPHIC", "New York", "212", ["12125550100", "12125550177"])
    fake.add_region("US", "GEOGRAPHIC", "Chicago", "312", ["13125550123"])
    yield fake
    fake.stop()


@pytest.fixture
def provider(vox):
    return VoximplantProvider(TelephonySettings(voximplant_api_url=vox.api_url))


def test_search_lists_the_catalog_of_a_region_by_area_code(vox, provider):
    found = provider.search(vox.credentials(), NumberQuery(country="US", area_code="312"))
    assert [n.e164 for n in found] == ["+13125550123"]
    assert found[0].region == "Chicago" and found[0].capabilities == ["voice"]
    (regions,) = vox.calls("GetPhoneNumberRegions")
    assert regions["phone_region_code"] == "312" and regions["phone_category_name"] == "GEOGRAPHIC"


def test_search_without_area_code_looks_in_several_regions_and_filters_contains(vox, provider):
    found = provider.search(vox.credentials(), NumberQuery(country="US", contains="5501*7"))
    assert [n.e164 for n in found] == ["+12125550177"]
    everything = provider.search(vox.credentials(), NumberQuery(country="US", limit=2))
    assert len(everything) == 2


def test_buy_attaches_the_number_and_binds_it_to_our_rule(vox, provider):
    bought = provider.buy(vox.credentials(), "+12125550100", URLS)
    phone = vox.attached[int(bought.provider_id)]
    assert phone.phone_number == "12125550100" and bought.e164 == "+12125550100"
    assert (phone.application_name, phone.rule_name) == ("voxagent", "voxagent")
    (attach,) = vox.calls("AttachPhoneNumber")
    assert attach["country_code"] == "US" and attach["phone_number"] == "12125550100"


def test_a_number_that_cannot_be_bound_is_deactivated_again(vox, provider):
    vox.fail_next["BindPhoneNumberToApplication"] = {"code": 125, "msg": "Rule is invalid"}
    with pytest.raises(ProviderError) as caught:
        provider.buy(vox.credentials(), "+12125550100", URLS)
    assert caught.value.code == "provider_rejected"
    (phone,) = vox.attached.values()
    assert phone.deactivated


def test_buying_a_number_no_longer_available_is_rejected(vox, provider):
    with pytest.raises(ProviderError) as caught:
        provider.buy(vox.credentials(), "+12125559999", URLS)
    assert caught.value.code == "provider_rejected"
    assert not vox.attached


def test_release_deactivates_and_an_unknown_number_is_not_found(vox, provider):
    bought = provider.buy(vox.credentials(), "+12125550100", URLS)
    provider.release(vox.credentials(), bought.provider_id)
    assert vox.attached[int(bought.provider_id)].deactivated
    with pytest.raises(ProviderError) as caught:
        provider.release(vox.credentials(), bought.provider_id)
    assert caught.value.code == "provider_not_found"


def test_a_wrong_key_is_provider_auth_failed_and_never_echoed(vox, provider):
    other_private, _ = key_pair()
    creds = vox.credentials(private_key=other_private)
    with pytest.raises(ProviderError) as caught:
        provider.search(creds, NumberQuery(country="US"))
    assert caught.value.code == "provider_auth_failed"
    assert other_private not in str(caught.value) and "PRIVATE" not in caught.value.message
    assert vox.requests == []  # the server refused before any method ran


def test_another_accounts_id_and_an_unusable_key_are_auth_failures(vox, provider):
    with pytest.raises(ProviderError) as caught:
        provider.search(vox.credentials(account_id="999"), NumberQuery(country="US"))
    assert caught.value.code == "provider_auth_failed"
    with pytest.raises(ProviderError) as caught:
        provider.search(vox.credentials(private_key="not a key"), NumberQuery(country="US"))
    assert caught.value.code == "provider_auth_failed"
    assert "not a key" not in caught.value.message


def test_an_unreachable_api_is_provider_unreachable(vox):
    vox.stop()
    provider = VoximplantProvider(TelephonySettings(voximplant_api_url=vox.api_url))
    with pytest.raises(ProviderError) as caught:
        provider.search(vox.credentials(), NumberQuery(country="US"))
    assert caught.value.code == "provider_unreachable"


def test_place_call_starts_our_scenario_with_the_call_in_custom_data(vox, provider):
    call_id = uuid.uuid4()
    placed = provider.place_call(vox.credentials(), OutboundCall(
        call_id=call_id, from_e164="+12125550100", to_e164="+447700900123", urls=URLS,
        machine_detection=True))  # fmt: skip
    (start,) = vox.calls("StartScenarios")
    assert (start["application_name"], start["rule_name"]) == ("voxagent", "voxagent")
    data = json.loads(start["script_custom_data"])
    assert data == {"call_id": str(call_id), "from": "+12125550100", "to": "+447700900123",
                    "machine_detection": True, "timeout": 30}  # fmt: skip
    (session,) = vox.sessions.values()
    assert placed.provider_call_id.endswith(f"/request/{session.session_id}")


def test_transfer_and_hang_up_command_the_running_session_with_the_route_token(vox, provider):
    creds = vox.credentials()
    placed = provider.place_call(creds, OutboundCall(
        call_id=uuid.uuid4(), from_e164="+12125550100", to_e164="+12125550111", urls=URLS,
    ))  # fmt: skip
    provider.transfer(creds, placed.provider_call_id, "+12125550199", "cold")
    provider.hang_up(creds, placed.provider_call_id)
    (session,) = vox.sessions.values()
    assert session.commands == [
        {"command": "transfer", "target": "+12125550199", "mode": "cold",
         "token": route_token(creds)},
        {"command": "hangup", "token": route_token(creds)},
    ]  # fmt: skip
    with pytest.raises(ProviderError) as caught:  # the session has ended
        provider.hang_up(creds, placed.provider_call_id)
    assert caught.value.code == "provider_not_found"
    with pytest.raises(ProviderError) as caught:
        provider.hang_up(creds, "not-a-session-url")
    assert caught.value.code == "provider_rejected"


def test_the_route_token_is_per_account_and_key_and_checked_in_constant_time(vox):
    creds = vox.credentials()
    token = route_token(creds)
    assert tokens_match(token, creds)
    assert not tokens_match(None, creds) and not tokens_match(token + "x", creds)
    assert route_token(vox.credentials(account_id="777")) != token
    assert route_token(vox.credentials(key_id="rotated")) != token
    assert vox.private_key not in token
