"""Outbound calls and transfers, the pure parts: E.164 checks, provider URLs and accounts, the
transfer_call tool's schema (configured targets only), the voicemail policy, agent config."""

import json
import uuid

import pytest
from pydantic import ValidationError

from adapters.api.errors import ApiError
from adapters.api.outbound import e164_or_422
from adapters.livekit.rooms import CallRoom
from adapters.telephony import calls as phone
from agent.transfers import transfer_call_schema, voicemail_action
from commands.telephony import ProviderCredentials
from domain.agent_config import AgentConfig, TransferTarget, VoicemailPolicy

pytestmark = pytest.mark.unit


def test_to_is_normalised_to_e164():
    assert e164_or_422(" +1 (415) 555-0100 ", "to") == "+14155550100"


@pytest.mark.parametrize("raw", ["4155550100", "+1 555", "+999123", "call me", "+44 20 7946"])
def test_a_number_that_is_not_e164_is_refused(raw):
    with pytest.raises(ApiError) as info:
        e164_or_422(raw, "to")
    assert (info.value.status, info.value.code) == (422, "invalid_phone_number")
    assert info.value.message.startswith("to: ")


def test_placed_calls_report_to_urls_that_name_the_call():
    call_id = uuid.uuid4()
    urls = phone.outbound_urls("https://api.example.com/", "twilio", call_id)
    assert urls.voice_url == f"https://api.example.com/api/twilio/voice?call_id={call_id}"
    assert urls.status_url == f"https://api.example.com/api/twilio/status?call_id={call_id}"


def test_only_providers_that_report_a_dials_fate_get_a_transfer_outcome_url():
    call_id = uuid.uuid4()
    url = phone.transfer_outcome_url("https://api.example.com/", "twilio", call_id)
    assert url == f"https://api.example.com/api/twilio/transfer?call_id={call_id}"
    sip = phone.transfer_outcome_url("https://api.example.com", "sip", call_id)
    assert sip == f"https://api.example.com/api/sip/transfer?call_id={call_id}"
    assert phone.transfer_outcome_url("https://api.example.com", "voximplant", call_id) is None


def test_sipd_knows_a_running_call_by_our_call_id():
    call_id = uuid.uuid4()
    assert phone.call_handle("sip", call_id, "a84b4c76e66710@pc33") == str(call_id)
    assert phone.call_handle("twilio", call_id, "CA" + "0" * 32) == "CA" + "0" * 32


class Numbers:
    def __init__(self, creds):
        self.creds = creds

    def get_number(self, actor, number_id):  # pragma: no cover - not used here
        raise NotImplementedError

    def credentials(self, space_id, provider):
        return self.creds


def test_a_provider_without_an_account_is_refused_except_our_sip_endpoint():
    with pytest.raises(phone.NoProviderAccount):
        phone.credentials_for(Numbers(None), "space-a", "twilio")
    assert phone.credentials_for(Numbers(None), "space-a", "sip").provider == "sip"
    creds = ProviderCredentials(provider="twilio", account_id="AC1", secrets={"token": "t"})
    assert phone.credentials_for(Numbers(creds), "space-a", "twilio") is creds


TARGETS = (
    TransferTarget(name="sales", destination="+14155550100", description="buying"),
    TransferTarget(name="desk", destination="sip:desk@pbx.example.com", mode="warm",
                   briefing="Caller {{customer_name}} wants a refund."),
)  # fmt: skip


def test_the_transfer_tool_offers_only_the_configured_names():
    schema = transfer_call_schema(TARGETS)
    assert schema["name"] == "transfer_call"
    assert schema["parameters"]["properties"]["target"]["enum"] == ["sales", "desk"]
    assert "+1415" not in json.dumps(schema)  # the model never sees a number to dial


@pytest.mark.parametrize("destination", ["12345", "tel:+14155550100", "+0123", "sip:nohost"])
def test_a_transfer_target_is_a_number_or_a_sip_uri(destination):
    with pytest.raises(ValidationError):
        TransferTarget(name="x", destination=destination)


def test_transfer_call_is_reserved_and_scripts_may_use_it_once_targets_exist():
    with pytest.raises(ValidationError):
        AgentConfig(name="a", tools=[{"name": "transfer_call", "description": "d",
                                      "url": "https://example.com"}])  # fmt: skip
    script = {
        "script": [{"match": "human", "tool": "transfer_call", "arguments": {"target": "sales"}}]
    }
    with pytest.raises(ValidationError):
        AgentConfig(name="a", llm=script)
    assert AgentConfig(name="a", llm=script, transfer_targets=TARGETS).transfer_targets


@pytest.mark.parametrize(
    "payload,policy,action",
    [
        (b'{"type":"answered_by","value":"machine"}', VoicemailPolicy(), ("hang_up", "")),
        (b'{"type":"answered_by","value":"machine"}',
         VoicemailPolicy(action="leave_message", message="Call us back"),
         ("leave_message", "Call us back")),
        (b'{"type":"answered_by","value":"human"}', VoicemailPolicy(), None),
        (b'{"type":"other"}', VoicemailPolicy(), None),
        (b"\xff garbage", VoicemailPolicy(), None),
    ],
)  # fmt: skip
def test_a_machine_answering_applies_the_agents_voicemail_policy(payload, policy, action):
    assert voicemail_action(payload, policy) == action


def test_leaving_a_message_needs_one():
    with pytest.raises(ValidationError):
        VoicemailPolicy(action="leave_message", message="  ")


def test_the_calls_variables_ride_in_the_room_metadata():
    room = CallRoom(call_id="c", space_id="s", agent_id="a", agent_config_version=1,
                    room_name="r", channel="sip", direction="outbound",
                    variables={"customer_name": "Ada"})  # fmt: skip
    back = CallRoom.from_metadata(room.metadata())
    assert (back.variables, back.direction) == ({"customer_name": "Ada"}, "outbound")
    old = json.dumps({"call_id": "c", "space_id": "s", "agent_id": "a",
                      "agent_config_version": 1, "room_name": "r"})  # fmt: skip
    assert CallRoom.from_metadata(old).variables is None
