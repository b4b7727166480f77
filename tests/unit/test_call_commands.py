"""The Calls application on the in-memory recorder: commands, and the batch path of ingest."""

import uuid
from datetime import UTC, datetime

import pytest

from commands.agents import Actor, AgentNotFound, AgentsApplication, ArchiveAgent, CreateAgent
from commands.calls import (
    AddTranscript,
    CallNotFound,
    CallsApplication,
    EndCall,
    InitiateCall,
    RecordUsage,
    RequestTransfer,
    StartCall,
)
from commands.signals import validate_signal
from domain.agent_config import AgentConfig
from domain.calls import CallEnded, CallNotStarted

pytestmark = pytest.mark.unit

# with the aggregate cache on, as in production, so the batch path loads through BatchLoader
ENV = {
    "PERSISTENCE_MODULE": "tests.fakes.recorder",
    "AGGREGATE_CACHE_MAXSIZE": "1000",
    "AGGREGATE_CACHE_FASTFORWARD": "y",
}
ALICE = Actor(space_id="space-a", subject="alice")
MALLORY = Actor(space_id="space-m", subject="mallory")
NOW = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def agents():
    app = AgentsApplication(env=ENV)
    yield app
    app.close()


@pytest.fixture
def app(agents):
    application = CallsApplication(env=ENV, agent_lookup=agents.get_agent, clock=lambda: NOW)
    yield application
    application.close()


@pytest.fixture
def agent_id(agents):
    return agents.create_agent(ALICE, CreateAgent(config=AgentConfig(name="Support"))).id


def initiate(app, agent_id, actor=ALICE, key=None, **fields):
    cmd = InitiateCall(agent_id=agent_id, direction="web", channel="web", **fields)
    return app.initiate_call(actor, cmd, key)


def event_types(app, call_id):
    return [type(e).TOPIC for e in app.events.get(call_id)]


# -- commands -------------------------------------------------------------------------------
def test_initiate_takes_the_agents_config_version_and_returns_id_version_position(
    app, agents, agent_id
):
    agents.update_agent(ALICE, _update(agent_id))
    result = initiate(app, agent_id)
    assert result.version == 1 and result.position == 1
    call = app.find_call(ALICE, result.id)
    assert call.agent_config_version == 2 and call.agent_id == str(agent_id)
    assert call.initiated_at == "2026-01-31T12:00:00.000Z"
    assert call.room_name == f"call-{result.id}"


def _update(agent_id):
    from commands.agents import UpdateAgent

    return UpdateAgent(agent_id=agent_id, patch={"description": "v2"})


def test_initiate_refuses_an_agent_of_another_space_or_an_archived_one(app, agents, agent_id):
    with pytest.raises(AgentNotFound):
        initiate(app, agent_id, actor=MALLORY)
    agents.archive_agent(ALICE, ArchiveAgent(agent_id=agent_id))
    from domain.errors import AgentArchived

    with pytest.raises(AgentArchived):
        initiate(app, agent_id)
    assert app.recorder.max_notification_id() in (None, 0)


def test_a_call_goes_through_its_whole_life_by_commands(app, agent_id):
    call_id = initiate(app, agent_id).id
    app.start_call(ALICE, StartCall(call_id=call_id))
    app.add_transcript(
        ALICE,
        AddTranscript(
            call_id=call_id, turn_id="t1", speaker="user", text="hi", start_ms=0, end_ms=800
        ),
    )
    app.record_usage(
        ALICE,
        RecordUsage(
            call_id=call_id, provider="deepgram", model="nova-3", kind="stt_seconds", quantity=0.8
        ),
    )
    app.request_transfer(ALICE, RequestTransfer(call_id=call_id, mode="cold", target="+1555"))
    later = datetime(2026, 1, 31, 12, 1, 30, tzinfo=UTC)
    ended = app.end_call(ALICE, EndCall(call_id=call_id, reason="transferred", at=later))
    assert ended.version == 6 and ended.call.duration_ms == 90_000
    assert event_types(app, call_id) == [
        "call.initiated",
        "call.started",
        "call.transcript_added",
        "call.usage_recorded",
        "call.transfer_requested",
        "call.ended",
    ]
    with pytest.raises(CallEnded):
        app.start_call(ALICE, StartCall(call_id=call_id))


def test_transfer_of_an_unanswered_call_is_refused(app, agent_id):
    call_id = initiate(app, agent_id).id
    with pytest.raises(CallNotStarted):
        app.request_transfer(ALICE, RequestTransfer(call_id=call_id, mode="warm", target="x"))


def test_starting_twice_changes_nothing_and_returns_the_current_version(app, agent_id):
    call_id = initiate(app, agent_id).id
    first = app.start_call(ALICE, StartCall(call_id=call_id))
    again = app.start_call(ALICE, StartCall(call_id=call_id))
    assert (again.version, again.position) == (first.version, first.position) == (2, 2)


def test_other_space_cannot_see_or_change_a_call(app, agent_id):
    call_id = initiate(app, agent_id).id
    with pytest.raises(CallNotFound):
        app.find_call(MALLORY, call_id)
    with pytest.raises(CallNotFound):
        app.start_call(MALLORY, StartCall(call_id=call_id))
    with pytest.raises(CallNotFound):
        app.find_call(ALICE, uuid.uuid4())


def test_replayed_idempotency_key_returns_the_first_result(app, agent_id):
    first = initiate(app, agent_id, key="k1")
    again = initiate(app, agent_id, key="k1")
    assert again.replayed and again.id == first.id
    assert app.recorder.max_notification_id() == 1


# -- the batch path ---------------------------------------------------------------------------
def signal(kind, call_id, n, space="space-a", **fields):
    defaults = {
        "call.initiated": dict(
            agent_id=str(uuid.uuid4()),
            agent_config_version=1,
            direction="inbound",
            channel="twilio_sip",
            room_name="r",
        ),
        "call.transcript": dict(
            turn_id=f"t{n}", speaker="user", text="hi", start_ms=n, end_ms=n + 5
        ),
        "call.usage": dict(provider="p", model="m", kind="tts_characters", quantity=10),
        "call.dtmf": dict(digit="1", offset_ms=100 * n),
        "call.transfer_requested": dict(mode="warm", target="sales"),
        "call.transfer_completed": dict(succeeded=True),
        "call.ended": dict(reason="hangup", duration_ms=1000),
    }.get(kind, {})
    return validate_signal(
        {
            "type": kind,
            "signal_id": f"{call_id}-{n}",
            "space_id": space,
            "call_id": str(call_id),
            "at": "2026-01-31T12:00:00.000Z",
            "source": "simulator",
            **defaults,
            **fields,
        }
    )


def statuses(outcomes):
    return [(o.status, o.code) for o in outcomes]


def test_a_batch_creates_calls_applies_in_order_and_saves_in_one_transaction(app):
    a, b = uuid.uuid4(), uuid.uuid4()
    batch = [
        signal("call.initiated", a, 0),
        signal("call.initiated", b, 0),
        signal("call.started", a, 1),
        signal("call.transcript", a, 2),
        signal("call.started", b, 1),
        signal("call.ended", b, 2),
        signal("call.usage", a, 3),
    ]
    saves = []
    original = app.save
    app._group_commit._save = lambda *e, **k: saves.append(len(e)) or original(*e, **k)
    outcomes = app.apply_signals(batch)
    assert [o.signal_id for o in outcomes] == [s.signal_id for s in batch]
    assert {o.status for o in outcomes} == {"applied"}
    assert saves == [7]
    assert event_types(app, a) == [
        "call.initiated",
        "call.started",
        "call.transcript_added",
        "call.usage_recorded",
    ]
    assert event_types(app, b) == ["call.initiated", "call.started", "call.ended"]


def test_a_mixed_batch_rejects_only_the_bad_signals(app):
    a, b, ghost = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    app.apply_signals([signal("call.initiated", b, 0), signal("call.ended", b, 1)])
    batch = [
        signal("call.initiated", a, 0),
        signal("call.transfer_requested", a, 1),  # not answered yet
        signal("call.started", a, 2),
        signal("call.started", a, 2),  # same signal id twice in a batch
        signal("call.transfer_requested", a, 3),
        signal("call.transfer_completed", a, 4),
        signal("call.transcript", b, 2),  # after the end
        signal("call.transcript", ghost, 0),  # no such call
        signal("call.transcript", a, 5, space="space-m"),  # another space
        signal("call.initiated", a, 6),  # initiated again with a new id
        signal("call.ended", a, 7),
        signal("call.ended", a, 8),  # the end happens once
        signal("call.ended", a, 9, source="provider"),  # LiveKit's room_finished confirms it
    ]
    assert statuses(app.apply_signals(batch)) == [
        ("applied", None),
        ("rejected", "call_not_started"),
        ("applied", None),
        ("duplicate", None),
        ("applied", None),
        ("applied", None),
        ("rejected", "call_ended"),
        ("rejected", "unknown_call"),
        ("rejected", "space_mismatch"),
        ("rejected", "call_exists"),
        ("applied", None),
        ("rejected", "call_ended"),
        ("duplicate", None),
    ]
    assert event_types(app, a) == [
        "call.initiated",
        "call.started",
        "call.transfer_requested",
        "call.transfer_completed",
        "call.ended",
    ]


def test_key_presses_are_recorded_in_order_once_and_not_after_the_end(app):
    a = uuid.uuid4()
    batch = [
        signal("call.initiated", a, 0),
        signal("call.started", a, 1),
        signal("call.dtmf", a, 2, digit="4"),
        signal("call.dtmf", a, 3, digit="2"),
        signal("call.dtmf", a, 3, digit="2"),  # the same signal again
        signal("call.dtmf", a, 4, digit="#"),
        signal("call.ended", a, 5),
        signal("call.dtmf", a, 6, digit="9"),  # after the end
    ]
    assert statuses(app.apply_signals(batch)) == [
        ("applied", None), ("applied", None), ("applied", None), ("applied", None),
        ("duplicate", None), ("applied", None), ("applied", None), ("rejected", "call_ended"),
    ]  # fmt: skip
    presses = [e for e in app.events.get(a) if type(e).TOPIC == "call.dtmf_received"]
    assert [(e.digit, e.offset_ms) for e in presses] == [("4", 200), ("2", 300), ("#", 400)]
    assert {o.status for o in app.apply_signals(batch[:7])} == {"duplicate"}


def test_a_replayed_batch_changes_nothing(app):
    a = uuid.uuid4()
    batch = [
        signal("call.initiated", a, 0),
        signal("call.started", a, 1),
        signal("call.transcript", a, 2),
        signal("call.ended", a, 3),
    ]
    app.apply_signals(batch)
    before = app.recorder.max_notification_id()
    assert {o.status for o in app.apply_signals(batch)} == {"duplicate"}
    assert app.recorder.max_notification_id() == before


def test_a_conflicting_batch_is_saved_call_by_call(app):
    a, b = uuid.uuid4(), uuid.uuid4()
    app.apply_signals([signal("call.initiated", a, 0), signal("call.initiated", b, 0)])
    stale = app.repository.get(a)  # another writer moves call a on after our batch load
    real_load_many = app._load_many

    def racing_load_many(call_ids):
        calls = real_load_many(call_ids)
        if a in call_ids and not raced:
            raced.append(True)
            stale.start(at="2026-01-31T12:00:00.000Z", signal_id="other-writer")
            app.save(stale)
        return calls

    raced = []
    app._load_many = racing_load_many
    outcomes = app.apply_signals([signal("call.started", a, 1), signal("call.started", b, 1)])
    assert statuses(outcomes) == [("duplicate", None), ("applied", None)]
    assert event_types(app, a) == ["call.initiated", "call.started"]
    assert event_types(app, b) == ["call.initiated", "call.started"]


# -- ingest's batch handling (adapters/kafka/ingest.py), Kafka replaced by plain objects ------
class Message:
    def __init__(self, value, offset, topic="p.ingress.worker.v1"):
        self.topic, self.partition, self.offset = topic, 0, offset
        self.key, self.value = b"k", value


def run_ingest(apply, *batches, journal=None, start=0.0, **kwargs):
    """Feed ``batches`` (lists of messages, or a number: advance the clock that many seconds
    and let the retry timer run) to one Ingest whose clock starts at ``start`` (waits advance
    it); return it and what it dead-lettered."""
    import asyncio

    from adapters.kafka.consumer import ConsumerRuntime
    from adapters.kafka.ingest import Ingest
    from commands.call_ingest import Parking
    from tests.fakes.parking import MemoryJournal

    sent, slept = [], []
    now = [start]

    async def send(topic, key, value, headers):
        sent.append((topic, value, dict((k, v.decode()) for k, v in headers)))

    async def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds
        if len(slept) > 50:
            raise RuntimeError(f"stuck: slept {slept[:5]}...")

    async def inline(fn, *args):
        return fn(*args)

    runtime = ConsumerRuntime("ingest", send, unapplicable="dead_letter",
                              failed_code="ingest_failed", sleep=sleep, clock=lambda: now[0],
                              in_thread=inline)  # fmt: skip
    parking = Parking(max_age=30, max_items=kwargs.pop("max_items", 100), retry_every=0.5,
                      clock=lambda: now[0])  # fmt: skip
    journal = journal if journal is not None else MemoryJournal()
    ingest = Ingest(apply, runtime, parking=parking, journal=journal, **kwargs)
    ingest.slept = slept

    async def feed():
        for batch in batches:
            if isinstance(batch, (int, float)):
                now[0] += batch
                await ingest.retry_parked()
            else:
                await ingest.handle(batch)

    asyncio.run(feed())
    return ingest, sent


def test_ingest_dead_letters_malformed_and_rejected_signals_and_applies_the_rest(app):
    from commands.signals import encode_signal

    a, ghost = uuid.uuid4(), uuid.uuid4()
    good = [signal("call.initiated", a, 0), signal("call.started", a, 1)]
    messages = [
        Message(encode_signal(good[0]), 0),
        Message(b"{oops", 1),
        Message(encode_signal(signal("call.started", ghost, 0)), 2),
        Message(encode_signal(good[1]), 3),
        Message(encode_signal(signal("call.ended", a, 4, reason="x")), 4),
        Message(encode_signal(signal("call.started", a, 5)), 5),
    ]
    ingest, sent = run_ingest(app.apply_signals, messages)
    assert event_types(app, a) == ["call.initiated", "call.started", "call.ended"]
    assert [(t, h["dlq.error"], h["dlq.source"]) for t, _, h in sent] == [
        ("p.ingress.worker.v1.dlq", "malformed_json", "p.ingress.worker.v1#0@1"),
        ("p.ingress.worker.v1.dlq", "call_ended", "p.ingress.worker.v1#0@5"),
    ]
    assert sent[0][1] == b"{oops"
    assert (ingest.applied, ingest.duplicates, ingest.rejected) == (3, 0, 2)
    assert ghost in ingest.parking and len(ingest.parking) == 1  # waits for its call


# -- parking: signals that overtook their call's call.initiated --------------------------------
def test_parking_keeps_each_calls_items_in_order_and_hands_out_whole_calls():
    from commands.call_ingest import Parking

    now = [0.0]
    parking = Parking(max_age=30, max_items=5, retry_every=0.5, clock=lambda: now[0])
    a, b = uuid.uuid4(), uuid.uuid4()
    assert parking.park(a, "a1") == [] and parking.park(b, "b1") == []
    now[0] = 0.2
    parking.park(a, "a2")
    assert (len(parking), a in parking, uuid.uuid4() in parking) == (3, True, False)
    assert parking.take() == []  # nothing is due yet, nothing named
    taken = parking.take([a, uuid.uuid4()])  # a new batch touches call a
    assert [(p.item, p.since) for p in taken] == [("a1", 0.0), ("a2", 0.2)]
    assert a not in parking and len(parking) == 1
    now[0] = 1.0
    for p in taken:  # still unknown: back, keeping when they were first parked
        parking.park(a, p.item, p.since)
    assert [p.item for p in parking.take()] == ["b1"]  # only b was due
    now[0] = 2.0
    assert [p.item for p in parking.take()] == ["a1", "a2"]
    assert parking.take(everything=True) == [] and len(parking) == 0


def test_parking_expires_from_the_front_and_evicts_the_oldest_call_first():
    from commands.call_ingest import Parking

    now = [0.0]
    parking = Parking(max_age=30, max_items=3, retry_every=0.5, clock=lambda: now[0])
    a, b = uuid.uuid4(), uuid.uuid4()
    parking.park(a, "a1")
    now[0] = 10.0
    parking.park(a, "a2")
    parking.park(b, "b1")
    assert parking.park(b, "b2") == ["a1"]  # full: the oldest call loses its oldest item
    assert parking.park(b, "b3") == ["a2"] and a not in parking
    now[0] = 39.9
    assert parking.expire() == []
    now[0] = 40.0
    assert parking.expire() == ["b1", "b2", "b3"] and len(parking) == 0


def test_ingest_holds_signals_that_overtook_their_call_and_applies_them_in_order(app):
    from commands.signals import encode_signal

    a, b = uuid.uuid4(), uuid.uuid4()
    provider = "p.ingress.provider.v1"
    worker = [Message(encode_signal(signal("call.started", a, 1)), 0),
              Message(encode_signal(signal("call.transcript", a, 2)), 1)]  # fmt: skip
    later = [Message(encode_signal(signal("call.transcript", a, 3)), 2)]
    initiated = [Message(encode_signal(signal("call.initiated", a, 0)), 0, topic=provider)]
    # b: its worker signal and its call.initiated in the same batch, the worker's first
    same_batch = [
        Message(encode_signal(signal("call.started", b, 1)), 3),
        Message(encode_signal(signal("call.initiated", b, 0)), 1, topic=provider),
    ]
    ingest, sent = run_ingest(app.apply_signals, worker, 0.3, later, 0.3, initiated + same_batch)
    assert sent == []
    assert event_types(app, a) == [
        "call.initiated", "call.started", "call.transcript_added", "call.transcript_added"
    ]  # fmt: skip
    assert [e.turn_id for e in list(app.events.get(a))[2:]] == ["t2", "t3"]
    assert event_types(app, b) == ["call.initiated", "call.started"]
    assert (ingest.applied, ingest.rejected, len(ingest.parking)) == (6, 0, 0)


def test_ingest_retries_parked_signals_on_its_timer_when_the_call_appears_elsewhere(app):
    import asyncio

    from commands.signals import encode_signal

    a = uuid.uuid4()
    ingest, sent = run_ingest(
        app.apply_signals, [Message(encode_signal(signal("call.started", a, 1)), 0)]
    )
    assert len(ingest.parking) == 1
    app.apply_signals([signal("call.initiated", a, 0)])  # e.g. another ingest, or the API
    asyncio.run(ingest.retry_parked())  # not due yet
    assert len(ingest.parking) == 1
    ingest.parking.clock = lambda: 1.0  # due for a retry
    asyncio.run(ingest.retry_parked())
    assert event_types(app, a) == ["call.initiated", "call.started"] and sent == []
    assert len(ingest.parking) == 0


def test_ingest_dead_letters_parked_signals_that_expire_or_overflow(app):
    from commands.signals import encode_signal

    ghosts = [uuid.uuid4() for _ in range(4)]
    batch = [Message(encode_signal(signal("call.transcript", g, 1)), n)
             for n, g in enumerate(ghosts)]  # fmt: skip
    ingest, sent = run_ingest(app.apply_signals, batch[:2], 31, batch[2:], max_items=1)
    assert [(h["dlq.error"], h["dlq.source"].rsplit("@", 1)[1]) for _, _, h in sent] == [
        ("unknown_call", "0"), ("unknown_call", "1"), ("unknown_call", "2")
    ]  # fmt: skip
    assert "too many" in sent[0][2]["dlq.message"]
    assert "no call.initiated within 30 s" in sent[1][2]["dlq.message"]
    assert sent[1][2]["dlq.signal_id"] == f"{ghosts[1]}-1"
    assert len(ingest.parking) == 1 and ingest.rejected == 3
    assert [i.offset for i in ingest.journal.load()] == [3]  # only what still waits


def test_parked_signals_are_journaled_and_a_new_ingest_takes_them_back_in_order(app):
    from commands.signals import encode_signal
    from tests.fakes.parking import MemoryJournal

    a = uuid.uuid4()
    journal = MemoryJournal()
    early = [Message(encode_signal(signal("call.started", a, 1)), 0),
             Message(encode_signal(signal("call.transcript", a, 2)), 1)]  # fmt: skip
    first, sent = run_ingest(app.apply_signals, early, journal=journal)
    assert [i.offset for i in journal.load()] == [0, 1] and sent == []
    # the process dies (kill -9: nothing of its memory is kept); its call appears meanwhile
    app.apply_signals([signal("call.initiated", a, 0)])
    later = [Message(encode_signal(signal("call.transcript", a, 3)), 2)]
    second, sent = run_ingest(app.apply_signals, later, journal=journal)
    assert event_types(app, a) == [
        "call.initiated", "call.started", "call.transcript_added", "call.transcript_added"
    ]  # fmt: skip
    assert [e.turn_id for e in list(app.events.get(a))[2:]] == ["t2", "t3"]
    assert sent == [] and journal.load() == [] and len(second.parking) == 0


def test_ingest_waits_out_infrastructure_errors_and_dead_letters_nothing(app):
    from commands.signals import encode_signal

    a, b = uuid.uuid4(), uuid.uuid4()
    calls = []

    def flaky(signals):
        calls.append(len(signals))
        if len(calls) <= 6:
            raise ConnectionError("database away")
        return app.apply_signals(signals)

    messages = [
        Message(encode_signal(signal("call.initiated", a, 0)), 0),
        Message(encode_signal(signal("call.initiated", b, 0)), 1),
    ]
    ingest, sent = run_ingest(flaky, messages)
    assert calls == [2] * 7  # the same batch, until the database answers
    assert ingest.slept == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]  # capped backoff
    assert event_types(app, a) == event_types(app, b) == ["call.initiated"]
    assert sent == [] and ingest.runtime.status.state == "running"


def test_ingest_dead_letters_only_the_signal_that_fails_for_itself(app):
    from commands.signals import encode_signal

    a, b = uuid.uuid4(), uuid.uuid4()

    def picky(signals):
        if any(s.call_id == b for s in signals):
            raise ValueError("cannot store this one")
        return app.apply_signals(signals)

    messages = [
        Message(encode_signal(signal("call.initiated", a, 0)), 0),
        Message(encode_signal(signal("call.initiated", b, 0)), 1),
    ]
    _, sent = run_ingest(picky, messages)
    assert event_types(app, a) == ["call.initiated"]
    assert [(h["dlq.error"], h["dlq.source"]) for _, _, h in sent] == [
        ("ingest_failed", "p.ingress.worker.v1#0@1")
    ]
    assert "cannot store this one" in sent[0][2]["dlq.message"]


def test_an_outage_longer_than_park_max_age_does_not_dead_letter_parked_signals(app):
    import psycopg

    from commands.signals import encode_signal

    a, calls = uuid.uuid4(), []

    def database_away_for_a_while(signals):
        calls.append(len(signals))
        if 2 <= len(calls) <= 13:  # the timer's retry meets PostgreSQL away for ~45 s
            raise psycopg.OperationalError("connection refused")
        return app.apply_signals(signals)

    early = [Message(encode_signal(signal("call.started", a, 1)), 0)]
    initiated = [Message(encode_signal(signal("call.initiated", a, 0)), 0,
                         topic="p.ingress.provider.v1")]  # fmt: skip
    ingest, sent = run_ingest(database_away_for_a_while, early, 0.5, initiated)
    assert sum(ingest.slept) > 30  # longer than park_max_age
    assert sent == [] and len(ingest.parking) == 0
    assert event_types(app, a) == ["call.initiated", "call.started"]


def test_parked_signals_still_expire_when_their_call_never_comes(app):
    from commands.signals import encode_signal

    a = uuid.uuid4()
    early = [Message(encode_signal(signal("call.started", a, 1)), 0)]
    ingest, sent = run_ingest(app.apply_signals, early, 10, 10, 10.5)
    assert [h["dlq.error"] for _, _, h in sent] == ["unknown_call"]
    assert len(ingest.parking) == 0


def test_a_restart_after_a_long_downtime_does_not_dead_letter_parked_signals(app):
    from commands.signals import encode_signal
    from tests.fakes.parking import MemoryJournal

    a, journal = uuid.uuid4(), MemoryJournal()
    early = [Message(encode_signal(signal("call.started", a, 1)), 0)]
    _, sent = run_ingest(app.apply_signals, early, journal=journal)
    assert sent == [] and len(journal.load()) == 1
    # ingest is down for an hour; its call.initiated waits in Kafka meanwhile
    initiated = [Message(encode_signal(signal("call.initiated", a, 0)), 0,
                         topic="p.ingress.provider.v1")]  # fmt: skip
    second, sent = run_ingest(app.apply_signals, 0.5, initiated, journal=journal, start=3600.0)
    assert sent == [] and journal.load() == [] and len(second.parking) == 0
    assert event_types(app, a) == ["call.initiated", "call.started"]


def test_a_write_racing_ingest_is_retried_and_nothing_is_dead_lettered(app):
    from commands.agents import ConcurrentModification
    from commands.signals import encode_signal

    a, calls = uuid.uuid4(), []

    def racing(signals):
        calls.append(len(signals))
        if len(calls) <= 2:
            raise ConcurrentModification(f"call {a} keeps changing concurrently; retry")
        return app.apply_signals(signals)

    messages = [Message(encode_signal(signal("call.initiated", a, 0)), 0),
                Message(encode_signal(signal("call.started", a, 1)), 1)]  # fmt: skip
    ingest, sent = run_ingest(racing, messages)
    assert sent == [] and calls == [2, 2, 2]  # the same batch, whole, until it goes through
    assert event_types(app, a) == ["call.initiated", "call.started"]
    assert ingest.runtime.status.state == "running"


def test_a_call_command_is_checked_again_on_the_call_ingest_changed_meanwhile(app, agent_id):
    call_id = initiate(app, agent_id).id
    app.start_call(ALICE, StartCall(call_id=call_id))
    find_call, raced = app.find_call, []

    def find_then_race(actor, wanted):
        call = find_call(actor, wanted)
        if not raced:  # another writer (ingest) saves a transcript after our load
            raced.append(True)
            line = AddTranscript(call_id=call_id, turn_id="t1", speaker="user", text="hello",
                                 start_ms=0, end_ms=500)  # fmt: skip
            app.add_transcript(ALICE, line)
        return call

    app.find_call = find_then_race
    result = app.request_transfer(
        ALICE, RequestTransfer(call_id=call_id, mode="cold", target="+15559999")
    )
    assert raced and result.version == 4
    assert event_types(app, call_id)[-2:] == ["call.transcript_added", "call.transfer_requested"]
