"""Numbers, trunks and provider accounts as pure code: normalisation, aggregate rules, the
projector's rows."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.contract import envelope, topic_for
from domain.phone_numbers import (
    InvalidNumber,
    InvalidPhoneNumber,
    NumberAssigned,
    NumberReleased,
    PhoneNumber,
    normalise_e164,
)
from domain.provider_accounts import ProviderAccount, account_id_of
from domain.sip_trunks import InvalidTrunk, SipTrunk, TrunkDeleted, TrunkSpec, validated_trunk
from projections.agents import MalformedEnvelope
from projections.numbers import clickhouse_number_row, latest_rows, number_row

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        (" +44 20 7946 0000 ", "+442079460000"),
        ("+7 495 123-45-67", "+74951234567"),
        ("+49.151.2345.6789", "+4915123456789"),
    ],
)
def test_numbers_are_normalised_to_e164(raw, e164):
    assert normalise_e164(raw) == e164


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "required"),
        ("4155550100", "country code"),
        ("+1415", "wrong number of digits"),
        ("+999123456", "not a phone number"),
        ("+15551234567", "not a valid number"),
        ("+14155550100 ext. 12", "extension"),
        ("+1" + "5" * 80, "too long"),
        ("call me", "country code"),
    ],
)
def test_invalid_numbers_are_refused_saying_why(raw, says):
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalise_e164(raw)
    assert says in caught.value.message and caught.value.code == "invalid_phone_number"


def number(**kw):
    return PhoneNumber.provision(space_id="s", e164="+14155550100", provider="twilio",
                                 actor="alice", **kw)  # fmt: skip


def test_every_number_event_carries_the_whole_state():
    n, agent = number(provider_id="PN1"), uuid4()
    n.assign(agent, "bob")
    n.set_caller_id(agent, "bob")
    events = n.collect_events()
    assert [type(e).TOPIC for e in events] == [
        "number.provisioned", "number.assigned", "number.caller_id_set",
    ]  # fmt: skip
    last = envelope(events[-1], 3)["data"]
    assert last == {
        "e164": "+14155550100", "provider": "twilio", "provider_id": "PN1",
        "capabilities": ["voice"], "inbound_agent_id": str(agent),
        "outbound_agent_id": str(agent), "trunk_id": None, "status": "active", "actor": "bob",
    }  # fmt: skip
    assert topic_for("number.assigned") == "voxagent.numbers.v1"


def test_assigning_the_same_agent_twice_changes_nothing():
    n, agent = number(), uuid4()
    assert n.assign(agent, "a") and not n.assign(agent, "a")
    assert not n.clear_caller_id("a")


def test_an_assigned_number_is_released_only_after_unassigning():
    n = number()
    n.assign(uuid4(), "a")
    with pytest.raises(NumberAssigned, match="unassign it first"):
        n.release("a")
    n.unassign("a")
    n.release("a")
    assert n.released and n.outbound_agent_id is None


def test_a_released_number_takes_no_further_change():
    n = number()
    n.release("a")
    for change in (lambda: n.assign(uuid4(), "a"), lambda: n.unassign("a"),
                   lambda: n.set_caller_id(uuid4(), "a"), lambda: n.release("a")):  # fmt: skip
        with pytest.raises(NumberReleased):
            change()


def test_provisioning_refuses_unknown_providers_capabilities_and_trunks_off_sip():
    with pytest.raises(InvalidNumber):
        number(capabilities=["telepathy"])
    with pytest.raises(InvalidNumber):
        number(trunk_id=uuid4())
    with pytest.raises(InvalidNumber):
        PhoneNumber.provision(space_id="s", e164="+14155550100", provider="pigeon", actor="a")
    with pytest.raises(InvalidPhoneNumber):
        PhoneNumber.provision(space_id="s", e164="+1415", provider="sip", actor="a")


def test_trunk_addresses_are_normalised_and_bad_ones_refused():
    spec = TrunkSpec(name="t", inbound={"allowed_addresses": ["10.1.2.3/8", "192.0.2.7"]},
                     outbound={"address": "sip.example.com:5060", "transport": "tcp"})  # fmt: skip
    assert spec.inbound.allowed_addresses == ["10.0.0.0/8", "192.0.2.7/32"]
    for bad in ({"inbound": {"allowed_addresses": ["10.0.0.300"]}},
                {"outbound": {"address": "sip example.com"}},
                {"outbound": {"address": "h:70000"}},
                {"outbound": {"address": "h", "transport": "tls"}}):  # fmt: skip
        with pytest.raises(InvalidTrunk):
            validated_trunk({"name": "t", **bad})


def test_trunk_updates_carry_what_changed_and_a_deleted_trunk_takes_none():
    trunk = SipTrunk.create("s", TrunkSpec(name="t"), "a")
    assert trunk.update({"name": "t"}, "a") == []
    assert trunk.update({"name": "u", "outbound": {"address": "10.0.0.1"}}, "a") == [
        "name", "outbound",
    ]  # fmt: skip
    trunk.delete("a")
    with pytest.raises(TrunkDeleted):
        trunk.update({"name": "v"}, "a")
    assert [type(e).TOPIC for e in trunk.collect_events()] == [
        "trunk.created", "trunk.updated", "trunk.deleted",
    ]  # fmt: skip


def test_a_space_has_one_account_id_per_provider():
    account = ProviderAccount.connect("s", "twilio", "AC1", "a")
    assert account.id == account_id_of("s", "twilio") != account_id_of("t", "twilio")
    account.disconnect("a")
    account.change("AC2", "a")
    assert [type(e).TOPIC for e in account.collect_events()] == [
        "provider_account.connected", "provider_account.disconnected",
        "provider_account.reconnected",
    ]  # fmt: skip
    assert account.connected and account.account_id == "AC2"


def test_projector_rows_keep_the_latest_version_and_the_creation_time():
    n, agent = number(), uuid4()
    n.assign(agent, "a")
    n.unassign("a")
    n.release("a")
    envs = [envelope(e, i) for i, e in enumerate(n.collect_events(), start=10)]
    rows = latest_rows([number_row(e) for e in envs])["numbers"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["status"], row["version"], row["position"]) == ("released", 4, 13)
    assert row["created_at"] is not None and row["released_at"] == row["updated_at"]
    assert row["inbound_agent_id"] is None
    ch = clickhouse_number_row(envs[1])
    assert (ch["inbound_agent_id"], ch["country_code"], ch["version"]) == (str(agent), "1", 2)


def test_projector_rows_of_trunks_and_accounts_hold_no_secrets():
    trunk = SipTrunk.create("s", TrunkSpec(name="t", inbound={"username": "u"}), "a")
    account = ProviderAccount.connect("s", "twilio", "AC1", "a")
    (t_table, t_row), (a_table, a_row) = (
        number_row(envelope(e, 1)) for e in (*trunk.collect_events(), *account.collect_events())
    )
    assert (t_table, t_row["trunk"]["inbound"]["username"]) == ("sip_trunks", "u")
    assert (a_table, a_row["account_id"], a_row["connected"]) == ("provider_accounts", "AC1", True)


def test_a_malformed_envelope_is_refused():
    env = envelope(number().collect_events()[0], 1)
    env["data"] = {"e164": "+1"}
    with pytest.raises(MalformedEnvelope):
        number_row(env)
