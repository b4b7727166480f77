"""The SIP voice provider (adapters/telephony/sip.py) against a local stand-in of ``sipd``'s
control API: what it sends for each call, and how each failure becomes a ``ProviderError``
with a stable code. The trunks come from a small in-memory directory (the provider's
``SipTrunks`` port); the API tests (test_sip_api.py) use the real numbers application."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.telephony.sip import SipVoiceProvider
from commands.numbers import NumberRoute, TrunkSecrets
from commands.telephony import CallbackUrls, OutboundCall, ProviderCredentials, ProviderError
from domain.sip_trunks import SipTrunk, TrunkSpec
from infra.settings import Settings
from tests.support.fake_sipd import FakeSipd

pytestmark = pytest.mark.integration
CREDS = ProviderCredentials(provider="sip", account_id="", secrets={})
CALLER, TRUNK = "+14155550100", uuid.UUID(int=7)


class Directory:
    """One SIP number and its trunk, as ``NumbersApplication`` would answer."""

    def __init__(self, outbound: dict[str, Any] | None) -> None:
        spec = {"name": "Carrier", "inbound": {"allowed_addresses": ["10.0.0.0/8"]}}
        if outbound is not None:
            spec["outbound"] = outbound
        self.trunk = SipTrunk.create("space-1", TrunkSpec.model_validate(spec), "test")

    def route(self, e164: str) -> NumberRoute | None:
        if e164 != CALLER:
            return None
        return NumberRoute(number_id=uuid.uuid4(), space_id="space-1", e164=CALLER,
                           provider="sip", agent_id=None, trunk_id=self.trunk.id,
                           status="active")  # fmt: skip

    def trunk_of(self, trunk_id: uuid.UUID) -> SipTrunk | None:
        return self.trunk if trunk_id == self.trunk.id else None

    def trunk_secret(self, trunk_id: uuid.UUID) -> TrunkSecrets | None:
        outbound = self.trunk.spec.outbound
        user = outbound.username if outbound else None
        return TrunkSecrets(trunk_id=trunk_id, space_id="space-1", inbound_username=None,
                            inbound_password=None, outbound_username=user,
                            outbound_password="carrier-pass" if user else None)  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeSipd]:
    server = FakeSipd("shared-secret").start()
    yield server
    server.stop()


def provider(fake: FakeSipd, directory: Directory, secret: str = "shared-secret") -> Any:
    telephony = Settings().telephony.model_copy(update={
        "sipd_control_port": fake.port, "sip_secret": SecretStr(secret),
    })  # fmt: skip
    return SipVoiceProvider(telephony, lambda: directory)


def order(frm: str = CALLER, **changes: Any) -> OutboundCall:
    urls = CallbackUrls(voice_url="http://api/api/sip/invite", status_url="http://api/status")
    base: dict[str, Any] = {"call_id": uuid.uuid4(), "from_e164": frm, "to_e164": "+12025550123",
                            "urls": urls, "stream_url": "ws://bridge/streams/sip",
                            "stream_token": "t0k"}  # fmt: skip
    return OutboundCall(**(base | changes))


def test_a_call_is_placed_through_the_trunk_with_its_credentials(fake):
    outbound = {"address": "pbx.example.com:5080", "transport": "tcp", "username": "acct"}
    sip = provider(fake, Directory(outbound))
    call = order(timeout_seconds=20)
    placed = sip.place_call(CREDS, call)
    (request,) = fake.of("/calls")
    assert request.authorization == "Bearer shared-secret"
    assert request.body == {
        "call_id": str(call.call_id), "to": "sip:+12025550123@pbx.example.com:5080",
        "from_user": CALLER,
        "trunk": {"address": "pbx.example.com:5080", "transport": "tcp", "username": "acct",
                  "password": "carrier-pass"},
        "stream_url": "ws://bridge/streams/sip", "token": "t0k",
        "codec_preference": ["PCMU", "PCMA"], "timeout_seconds": 20,
    }  # fmt: skip
    assert placed.provider_call_id == fake.calls[str(call.call_id)]["sip_call_id"]
    assert "carrier-pass" not in repr(call) and "t0k" not in repr(call)


def test_transfer_and_hang_up_name_our_call_id(fake):
    sip = provider(fake, Directory({"address": "pbx.example.com"}))
    call_id = str(uuid.uuid4())
    fake.hold(call_id)
    sip.transfer(CREDS, call_id, "+14155550199", "cold")
    sip.transfer(CREDS, call_id, "sip:desk@10.1.1.1:5090", "warm")
    assert fake.transfers == [(call_id, "tel:+14155550199"), (call_id, "sip:desk@10.1.1.1:5090")]
    cold, warm = fake.of(f"/calls/{call_id}/transfer")
    assert cold.body == {"target": "tel:+14155550199", "mode": "cold"}
    ring = Settings().telephony.sip_transfer_ring_seconds
    assert warm.body == {"target": "sip:desk@10.1.1.1:5090", "mode": "warm",
                         "timeout_seconds": ring}  # fmt: skip
    fake.refuse_consult(486)  # a warm transfer's target that does not answer: the agent stays
    error = expect("transfer_failed", lambda: sip.transfer(CREDS, call_id, "+14155550199", "warm"))
    assert "486" in error.message
    sip.hang_up(CREDS, call_id)
    assert fake.hangups == [call_id]


def expect(code: str, action: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        action()
    assert info.value.code == code, info.value.message
    return info.value


def test_failures_have_stable_codes(fake):
    directory = Directory({"address": "pbx.example.com"})
    sip = provider(fake, directory)
    gone = str(uuid.uuid4())
    expect("provider_not_found", lambda: sip.transfer(CREDS, gone, "+14155550199", "cold"))
    expect("provider_not_found", lambda: sip.hang_up(CREDS, gone))
    expect("provider_rejected", lambda: sip.transfer(CREDS, "a84b@pc33", "+14155550199", "cold"))
    fake.hold(gone)
    expect("provider_rejected", lambda: sip.transfer(CREDS, gone, "front desk", "cold"))
    wrong = provider(fake, directory, secret="not-the-secret")
    error = expect("provider_auth_failed", lambda: wrong.place_call(CREDS, order()))
    assert "not-the-secret" not in error.message
    fake.fail_next(500)
    expect("provider_unreachable", lambda: sip.place_call(CREDS, order()))
    fake.fail_next(400)
    expect("provider_rejected", lambda: sip.place_call(CREDS, order()))
    expect("provider_rejected", lambda: sip.place_call(CREDS, order(frm="+14155550111")))
    expect("provider_rejected", lambda: sip.place_call(CREDS, order(stream_token=None)))
    no_outbound = provider(fake, Directory(None))
    expect("provider_rejected", lambda: no_outbound.place_call(CREDS, order()))
    port = fake.port
    fake.stop()
    down = SipVoiceProvider(Settings().telephony.model_copy(update={"sipd_control_port": port}),
                            lambda: directory)  # fmt: skip
    expect("provider_unreachable", lambda: down.place_call(CREDS, order()))
