"""Calls refused at the door of a number we know, as pure code: the RefusedCall aggregate, the
command (recorded once per provider call id, only in the number's space) and the projector's
rows (PostgreSQL ``refused_calls``, ClickHouse ``refused_calls``)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from pydantic import ValidationError

from commands.agents import Actor
from commands.numbers import (
    NumberNotFound,
    NumbersApplication,
    ProvisionNumber,
    RecordRefusal,
    ReleaseNumber,
)
from domain.contract import envelope, topic_for
from domain.refused_calls import InvalidRefusal, RefusedCall, refusal_id
from projections.agents import MalformedEnvelope
from projections.envelopes import ch_number_rows
from projections.numbers import clickhouse_refused_call_row, is_numbers_event, number_row

pytestmark = pytest.mark.unit
AT = datetime(2026, 12, 1, 9, 30, 15, 250_000, tzinfo=UTC)


def refusal(**kw):
    fields = dict(
        space_id="s", number_id=uuid4(), e164="+14155550100", provider="twilio",
        caller="+15550001111", reason="number_unassigned", provider_call_id="CA" + "1" * 32,
        at="2026-12-01T09:30:15.250Z",
    )  # fmt: skip
    return RefusedCall.record(**{**fields, **kw})


def test_a_refusal_is_one_number_call_refused_event_on_the_numbers_topic():
    r = refusal()
    (event,) = r.collect_events()
    assert type(event).TOPIC == "number.call_refused"
    env = envelope(event, 7)
    assert topic_for(env["type"]) == "voxagent.numbers.v1"
    assert env["space_id"] == "s" and env["aggregate_version"] == 1
    assert env["data"] == {
        "number_id": str(r.number_id), "e164": "+14155550100", "provider": "twilio",
        "caller": "+15550001111", "reason": "number_unassigned",
        "provider_call_id": "CA" + "1" * 32, "at": "2026-12-01T09:30:15.250Z",
    }  # fmt: skip


def test_the_same_call_to_the_same_number_is_the_same_refusal():
    number = uuid4()
    a = refusal(number_id=number, provider_call_id="CA1")
    assert a.id == refusal(number_id=number, provider_call_id="CA1").id
    assert a.id == refusal_id(number, "twilio", "CA1")
    assert a.id != refusal(number_id=number, provider_call_id="CA2").id
    assert a.id != refusal(number_id=uuid4(), provider_call_id="CA1").id
    assert a.id != refusal(number_id=number, provider="voximplant", provider_call_id="CA1").id


@pytest.mark.parametrize(
    ("field", "value"),
    [("reason", "bored"), ("provider", "skype"), ("provider_call_id", ""),
     ("provider_call_id", "x" * 129)],
)  # fmt: skip
def test_a_refusal_names_a_known_reason_provider_and_call_id(field, value):
    with pytest.raises(InvalidRefusal):
        refusal(**{field: value})


@pytest.fixture
def numbers() -> NumbersApplication:
    return NumbersApplication(env={"PERSISTENCE_MODULE": "tests.fakes.recorder"})


def cmd(number_id, **kw) -> RecordRefusal:
    fields = dict(number_id=number_id, provider="twilio", caller="+15550001111",
                  reason="number_unassigned", provider_call_id="CA" + "2" * 32, at=AT)  # fmt: skip
    return RecordRefusal(**{**fields, **kw})


def test_a_retried_refusal_is_recorded_once(numbers):
    who = Actor(space_id="s1", subject="system:twilio")
    made = numbers.provision_number(who, ProvisionNumber(e164="+14155550100", provider="twilio"))
    first = numbers.record_refusal(who, cmd(made.id))
    assert (first.version, first.replayed) == (1, False)
    again = numbers.record_refusal(who, cmd(made.id, at=datetime.now(UTC)))
    assert (again.id, again.replayed) == (first.id, True)
    assert again.aggregate.at == "2026-12-01T09:30:15.250Z"  # the first record stands
    refused = numbers.repository.get(first.id)
    assert (refused.number_id, refused.e164, refused.reason) == (
        made.id, "+14155550100", "number_unassigned",
    )  # fmt: skip
    number = numbers.get_number(who, made.id)
    assert number.version == 1  # the number itself did not change


def test_a_released_number_still_records_refusals_but_only_in_its_space(numbers):
    who = Actor(space_id="s2", subject="test")
    made = numbers.provision_number(who, ProvisionNumber(e164="+14155550101", provider="twilio"))
    numbers.release_number(who, ReleaseNumber(number_id=made.id))
    recorded = numbers.record_refusal(who, cmd(made.id, reason="number_released"))
    assert recorded.aggregate.reason == "number_released"
    with pytest.raises(NumberNotFound):
        numbers.record_refusal(Actor(space_id="other", subject="t"), cmd(made.id))


def test_the_command_refuses_unknown_reasons_and_overlong_callers():
    with pytest.raises(ValidationError):
        cmd(uuid4(), reason="unknown_number")  # unknown numbers are never recorded
    with pytest.raises(ValidationError):
        cmd(uuid4(), caller="1" * 65)
    with pytest.raises(ValidationError):
        cmd(uuid4(), at=datetime(1999, 12, 31, tzinfo=UTC))


def test_projector_rows_of_a_refusal():
    r = refusal(caller=None)
    env = envelope(r.collect_events()[0], 42)
    assert is_numbers_event(env)
    table, row = number_row(env)
    assert table == "refused_calls"
    assert row["id"] == str(r.id) and row["number_id"] == str(r.number_id)
    assert row["at"] == datetime(2026, 12, 1, 9, 30, 15, 250_000, tzinfo=UTC)
    assert (row["caller"], row["reason"], row["version"], row["position"]) == (
        None, "number_unassigned", 1, 42,
    )  # fmt: skip
    assert row["created_at"] is not None
    ch = clickhouse_refused_call_row(env)
    assert ch["at"] == datetime(2026, 12, 1, 9, 30, 15, tzinfo=UTC) and ch["at_ms"] == 250
    assert (ch["caller"], ch["country_code"], ch["refusal_id"]) == ("", "1", str(r.id))
    events, dims, refused = ch_number_rows(env)
    assert len(events) == 1 and dims == [] and refused == [ch]


def test_a_malformed_refusal_envelope_is_refused():
    env = envelope(refusal().collect_events()[0], 1)
    env["data"]["at"] = "yesterday"
    with pytest.raises(MalformedEnvelope):
        number_row(env)
