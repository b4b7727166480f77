"""The numbers write side on the real event store (PostgreSQL): claims that keep an E.164
number in one space at a time, secrets beside the events, the routing lookup."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from commands.agents import Actor, AgentNotFound, ArchiveAgent, CreateAgent
from commands.numbers import (
    AssignNumber,
    ConnectAccount,
    CreateTrunk,
    DeleteTrunk,
    DisconnectAccount,
    NumberNotFound,
    NumberTaken,
    ProvisionNumber,
    ReleaseNumber,
    SetCallerId,
    TrunkInUse,
    TrunkNotFound,
    UnassignNumber,
    UpdateTrunk,
)
from domain.agent_config import AgentConfig
from domain.errors import AgentArchived
from domain.phone_numbers import InvalidPhoneNumber, NumberAssigned, NumberReleased
from domain.sip_trunks import InvalidTrunk, TrunkSpec

pytestmark = pytest.mark.integration


def actor() -> Actor:
    return Actor(space_id=f"space-{uuid.uuid4().hex[:10]}", subject="tester")


def fresh_e164() -> str:
    """A valid, unused US number: +1 415 55x xxxx (random line)."""
    return f"+1415{uuid.uuid4().int % 8_000_000 + 2_000_000:07d}"


def agent(container: Any, who: Actor) -> uuid.UUID:
    return container.agents.create_agent(who, CreateAgent(config=AgentConfig(name="a"))).id


def provision(container: Any, who: Actor, e164: str, **kw: Any) -> Any:
    cmd = ProvisionNumber(e164=e164, provider=kw.pop("provider", "twilio"), **kw)
    return container.numbers.provision_number(who, cmd)


def test_a_number_routes_to_its_agent_as_soon_as_it_is_assigned(container):
    who, e164 = actor(), fresh_e164()
    numbers = container.numbers
    made = provision(container, who, e164, provider_id="PN123")
    assert numbers.route(e164).agent_id is None
    agent_id = agent(container, who)
    numbers.assign_number(who, AssignNumber(number_id=made.id, agent_id=agent_id))
    route = numbers.route(e164)
    assert (route.number_id, route.space_id, route.agent_id, route.status) == (
        made.id, who.space_id, agent_id, "active",
    )  # fmt: skip
    assert numbers.route(e164[1:]) == route  # a SIP user part without "+"
    assert numbers.route("+14155550000") is None or numbers.route("+14155550000") != route
    assert numbers.route("not a number") is None


def test_a_number_active_in_one_space_is_refused_in_another_until_released(container):
    alice, bob, e164 = actor(), actor(), fresh_e164()
    made = provision(container, alice, e164)
    with pytest.raises(NumberTaken):
        provision(container, bob, e164.replace("+1", "+1 "))
    with pytest.raises(NumberTaken):
        provision(container, alice, e164)
    container.numbers.release_number(alice, ReleaseNumber(number_id=made.id))
    assert container.numbers.route(e164) is None
    again = provision(container, bob, e164)
    assert container.numbers.route(e164).space_id == bob.space_id
    assert again.id != made.id


def test_concurrent_provisions_of_one_number_make_exactly_one(container):
    e164 = fresh_e164()
    outcomes: list[Any] = []

    def run() -> None:
        try:
            outcomes.append(provision(container, actor(), e164))
        except NumberTaken as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    made = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(made) == 1 and len(outcomes) == 6
    assert container.numbers.route(e164).number_id == made[0].id


def test_invalid_numbers_are_refused_and_nothing_is_claimed(container):
    who = actor()
    for raw in ("4155550100", "+1415", "+999123", "+15551234567", "+14155552671 ext. 12"):
        with pytest.raises(InvalidPhoneNumber):
            provision(container, who, raw)
    assert container.numbers.route("+15551234567") is None


def test_assigning_needs_a_live_agent_of_the_same_space(container):
    alice, mallory = actor(), actor()
    made = provision(container, alice, fresh_e164())
    foreign = agent(container, mallory)
    with pytest.raises(AgentNotFound):
        container.numbers.assign_number(alice, AssignNumber(number_id=made.id, agent_id=foreign))
    archived = agent(container, alice)
    container.agents.archive_agent(alice, ArchiveAgent(agent_id=archived))
    with pytest.raises(AgentArchived):
        container.numbers.assign_number(alice, AssignNumber(number_id=made.id, agent_id=archived))
    with pytest.raises(AgentArchived):
        container.numbers.set_caller_id(alice, SetCallerId(number_id=made.id, agent_id=archived))
    with pytest.raises(NumberNotFound):
        container.numbers.assign_number(mallory, AssignNumber(number_id=made.id, agent_id=foreign))
    assert container.numbers.get_number(alice, made.id).version == 1


def test_an_assigned_number_is_not_released_and_a_released_one_takes_no_change(container):
    who, e164 = actor(), fresh_e164()
    made = provision(container, who, e164)
    agent_id = agent(container, who)
    numbers = container.numbers
    numbers.assign_number(who, AssignNumber(number_id=made.id, agent_id=agent_id))
    with pytest.raises(NumberAssigned):
        numbers.release_number(who, ReleaseNumber(number_id=made.id))
    assert numbers.route(e164).agent_id == agent_id
    numbers.unassign_number(who, UnassignNumber(number_id=made.id))
    released = numbers.release_number(who, ReleaseNumber(number_id=made.id))
    assert released.aggregate.status == "released"
    with pytest.raises(NumberReleased):
        numbers.assign_number(who, AssignNumber(number_id=made.id, agent_id=agent_id))
    with pytest.raises(NumberReleased):
        numbers.release_number(who, ReleaseNumber(number_id=made.id))


def test_a_replayed_key_provisions_once(container):
    who, e164 = actor(), fresh_e164()
    cmd = ProvisionNumber(e164=e164, provider="twilio")
    first = container.numbers.provision_number(who, cmd, "k-1")
    second = container.numbers.provision_number(who, cmd, "k-1")
    assert second.replayed and second.id == first.id


def test_trunk_passwords_are_kept_apart_and_read_back_only_by_trunk_secret(container):
    who = actor()
    spec = TrunkSpec(
        name="carrier",
        inbound={"allowed_addresses": ["10.0.0.0/8"], "username": "in-user"},
        outbound={"address": "sip.example.com:5060", "username": "out-user"},
    )
    with pytest.raises(InvalidTrunk):
        container.numbers.create_trunk(who, CreateTrunk(spec=spec, inbound_password="in-secret-1"))
    made = container.numbers.create_trunk(
        who, CreateTrunk(spec=spec, inbound_password="in-secret-1", outbound_password="out-sec-1")
    )
    events = list(container.numbers.events.get(made.id))
    assert "in-secret-1" not in repr([e.__dict__ for e in events])
    secret = container.numbers.trunk_secret(made.id)
    assert (secret.inbound_username, secret.inbound_password) == ("in-user", "in-secret-1")
    assert (secret.outbound_username, secret.outbound_password) == ("out-user", "out-sec-1")
    assert "in-secret-1" not in repr(secret)
    container.numbers.update_trunk(
        who, UpdateTrunk(trunk_id=made.id, patch={}, inbound_password="in-secret-2")
    )
    assert container.numbers.trunk_secret(made.id).inbound_password == "in-secret-2"
    assert container.numbers.trunk_secret(made.id).outbound_password == "out-sec-1"
    with pytest.raises(TrunkNotFound):
        container.numbers.get_trunk(actor(), made.id)
    number = provision(container, who, fresh_e164(), provider="sip", trunk_id=made.id)
    assert container.numbers.route(number.aggregate.e164).trunk_id == made.id
    with pytest.raises(TrunkInUse):
        container.numbers.delete_trunk(who, DeleteTrunk(trunk_id=made.id))
    container.numbers.release_number(who, ReleaseNumber(number_id=number.id))
    container.numbers.delete_trunk(who, DeleteTrunk(trunk_id=made.id))
    assert container.numbers.trunk_secret(made.id) is None
    with pytest.raises(TrunkNotFound):
        provision(container, who, fresh_e164(), provider="sip", trunk_id=made.id)


def test_provider_credentials_stay_beside_the_events(container):
    who = actor()
    assert container.numbers.credentials(who.space_id, "twilio") is None
    cmd = ConnectAccount(provider="twilio", account_id="AC123", secrets={"auth_token": "tok-1"})
    made = container.numbers.connect_account(who, cmd)
    creds = container.numbers.credentials(who.space_id, "twilio")
    assert (creds.account_id, dict(creds.secrets)) == ("AC123", {"auth_token": "tok-1"})
    assert "tok-1" not in repr([e.__dict__ for e in container.numbers.events.get(made.id)])
    assert container.numbers.credentials(actor().space_id, "twilio") is None
    cmd2 = ConnectAccount(provider="twilio", account_id="AC123", secrets={"auth_token": "tok-2"})
    assert container.numbers.connect_account(who, cmd2).version == 2
    assert container.numbers.credentials(who.space_id, "twilio").secrets["auth_token"] == "tok-2"
    container.numbers.disconnect_account(who, DisconnectAccount(provider="twilio"))
    assert container.numbers.credentials(who.space_id, "twilio") is None
    again = container.numbers.connect_account(who, cmd)
    assert again.version == 4 and container.numbers.credentials(who.space_id, "twilio")


def test_the_in_process_runner_builds_the_read_models_and_a_replay_equals_them(container):
    from projections import number_queries
    from projections.numbers_replay import NumbersRunner, replay_numbers

    who = actor()
    made = provision(container, who, fresh_e164(), provider_id="PN9")
    agent_id = agent(container, who)
    container.numbers.assign_number(who, AssignNumber(number_id=made.id, agent_id=agent_id))
    trunk = container.numbers.create_trunk(
        who,
        CreateTrunk(
            spec=TrunkSpec(name="pbx", inbound={"username": "u"}), inbound_password="a-long-secret"
        ),  # fmt: skip
    )
    cmd = ConnectAccount(provider="twilio", account_id="AC9", secrets={"auth_token": "tok-9"})
    container.numbers.connect_account(who, cmd)
    NumbersRunner(container.numbers, container.pool).run_until_caught_up()
    with container.pool.connection() as conn:
        row = number_queries.get_number(conn, who.space_id, made.id)
        assert (row["inbound_agent_id"], row["version"], row["provider_id"]) == (agent_id, 2, "PN9")
        assert number_queries.get_number(conn, actor().space_id, made.id) is None
        rows, total = number_queries.list_trunks(conn, who.space_id, limit=10, offset=0)
        assert total == 1 and rows[0]["id"] == trunk.id
        assert "a-long-secret" not in repr(rows)
        dumped = conn.execute(
            "SELECT row_to_json(p)::text FROM provider_accounts p WHERE space_id = %s",
            (who.space_id,),
        ).fetchall()
        assert len(dumped) == 1 and "tok-9" not in dumped[0][0] and "AC9" in dumped[0][0]
    report = replay_numbers(container, check_only=True)
    assert report.equal and report.rebuilt_rows == report.live_rows >= 3
