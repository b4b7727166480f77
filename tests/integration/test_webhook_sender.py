"""The delivery worker against real PostgreSQL and real local receivers, with a test clock:
the retry schedule, timeouts and hangs, per-endpoint isolation, connect-time SSRF refusals and
disabling an endpoint that keeps failing. Endpoints are created by the real WebhooksApplication
and projected by the dispatcher's own projection functions (the in-process stand-in for the
Faust dispatcher, which test_webhooks.py runs for real)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from adapters.kafka.consumer import Item
from adapters.net.guard import TargetPolicy
from adapters.webhooks.dispatch import apply_batch
from adapters.webhooks.dispatch import project as project_endpoint
from adapters.webhooks.http import WebhookClient
from adapters.webhooks.queue import enqueue_one, prune
from adapters.webhooks.service import build_sender
from commands.agents import Actor
from commands.webhooks import CreateEndpoint, UpdateEndpoint
from domain.catalogue import TEST_EVENT_TYPE
from domain.contract import envelope, iso_ms
from domain.delivery import DEFAULT_SCHEDULE
from domain.webhooks import EndpointSpec
from infra.bootstrap import Container, bootstrap
from infra.settings import Settings, WebhookSettings
from projections.webhooks import apply_endpoint_rows, endpoint_row
from tests.support.dns import FixedResolver

pytestmark = pytest.mark.integration
LOOPBACK = TargetPolicy.from_strings(True, ["127.0.0.1/32"])


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def wh(stack_settings: Settings) -> Iterator[Container]:
    conf = WebhookSettings(timeout_seconds=0.5, per_endpoint_concurrency=3, disable_after_hours=1)
    c = bootstrap(stack_settings.model_copy(update={"webhooks": conf}))
    yield c
    c.close()


def endpoint(wh: Container, url: str, space: str | None = None) -> tuple[UUID, str]:
    """Create through the command side and project into the read model, like the dispatcher."""
    space = space or f"ws-{uuid4().hex[:8]}"
    made = wh.webhooks.create_endpoint(
        Actor(space_id=space, subject="t"), CreateEndpoint(spec=EndpointSpec(url=url))
    )
    project(wh, made.id)
    return made.id, space


def project(wh: Container, endpoint_id: UUID) -> None:
    rows = []
    for event in wh.webhooks.events.get(endpoint_id):
        position = wh.webhooks.recorder.position_of(endpoint_id, event.originator_version)
        rows.append(endpoint_row(envelope(event, position)))
    with wh.pool.connection() as conn, conn.transaction():
        apply_endpoint_rows(conn, rows)


def enqueue(wh: Container, endpoint_id: UUID, space: str, now: datetime) -> UUID:
    body = {"event_id": str(uuid4()), "type": TEST_EVENT_TYPE, "schema_version": 1,
            "space_id": space, "aggregate_id": str(endpoint_id), "aggregate_version": 1,
            "position": None, "occurred_at": iso_ms(now), "data": {}}  # fmt: skip
    with wh.pool.connection() as conn:
        return enqueue_one(conn, endpoint_id, body, now)


def row(wh: Container, delivery_id: UUID) -> dict[str, Any]:
    with wh.pool.connection() as conn:
        cur = conn.execute(
            "SELECT status, attempts, next_attempt_at, last_error, last_status_code "
            "FROM webhook_deliveries WHERE id = %s", (delivery_id,),
        )  # fmt: skip
        status, attempts, due, error, code = cur.fetchone()
    return {"status": status, "attempts": attempts, "due": due, "error": error, "code": code}


def sender(wh: Container, clock: Clock, policy: TargetPolicy = LOOPBACK, **kw: Any) -> Any:
    client = WebhookClient(policy, timeout_seconds=wh.settings.webhooks.timeout_seconds, **kw)
    return build_sender(wh, client=client, clock=clock, draw=lambda: 0.5)


async def turn(s: Any) -> int:
    """One claim, every claimed delivery sent and recorded."""
    claimed = await s.step()
    await s.drain()
    return claimed


def test_failed_attempts_retry_on_the_schedule_then_fail_for_good(wh, receiver):
    receiver.modes["/down"] = "fail"
    clock = Clock()
    eid, space = endpoint(wh, receiver.url("/down"))
    delivery = enqueue(wh, eid, space, clock.now)

    async def scenario() -> None:
        s = sender(wh, clock)
        try:
            assert await turn(s) >= 1
            for attempt, delay in enumerate(DEFAULT_SCHEDULE, start=1):
                state = row(wh, delivery)
                assert state["attempts"] == attempt and state["code"] == 500
                assert state["status"] == "pending"
                assert state["due"] == clock.now + timedelta(seconds=delay)  # draw 0.5: no jitter
                clock.advance(delay - 1)
                await turn(s)
                assert row(wh, delivery)["attempts"] == attempt  # not due yet
                clock.advance(1)
                await turn(s)
            final = row(wh, delivery)
            assert final["status"] == "failed" and final["attempts"] == 1 + len(DEFAULT_SCHEDULE)
            clock.advance(86_400)
            await turn(s)
            assert row(wh, delivery)["attempts"] == 1 + len(DEFAULT_SCHEDULE)
        finally:
            await s.client.close()

    asyncio.run(scenario())
    assert len(receiver.on("/down")) == 1 + len(DEFAULT_SCHEDULE)
    assert len({r.webhook_id for r in receiver.on("/down")}) == 1  # one id for every attempt


def test_a_receiver_that_times_out_or_hangs_is_a_failed_attempt_that_retries(wh, receiver):
    receiver.modes["/slow"] = "slow"
    receiver.slow_seconds = 2.0
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)  # accepts connections (the kernel does) and never answers
    clock = Clock()
    slow_id, slow_space = endpoint(wh, receiver.url("/slow"))
    hang_id, hang_space = endpoint(wh, f"http://127.0.0.1:{hang.getsockname()[1]}/hang")
    slow = enqueue(wh, slow_id, slow_space, clock.now)
    hung = enqueue(wh, hang_id, hang_space, clock.now)

    async def scenario() -> None:
        s = sender(wh, clock)
        try:
            await turn(s)
        finally:
            await s.client.close()

    try:
        asyncio.run(scenario())
    finally:
        hang.close()
    for delivery in (slow, hung):
        state = row(wh, delivery)
        assert state["error"] == "timeout" and state["status"] == "pending"
        assert state["due"] == clock.now + timedelta(seconds=DEFAULT_SCHEDULE[0])


def test_a_stuck_endpoint_holds_only_its_own_slots(wh, receiver):
    receiver.modes["/stuck"] = "hold"
    clock = Clock()
    stuck_id, stuck_space = endpoint(wh, receiver.url("/stuck"))
    fine_id, fine_space = endpoint(wh, receiver.url("/fine"))
    for _ in range(10):
        enqueue(wh, stuck_id, stuck_space, clock.now)
    fine = [enqueue(wh, fine_id, fine_space, clock.now) for _ in range(5)]
    limit = wh.settings.webhooks.per_endpoint_concurrency

    async def scenario() -> tuple[int, int]:
        s = sender(wh, clock)
        stop = asyncio.Event()
        running = asyncio.create_task(s.run(stop))
        try:
            for _ in range(200):  # the stuck endpoint never answers meanwhile
                if len(receiver.on("/fine")) == 5:
                    break
                await asyncio.sleep(0.05)
            return len(receiver.on("/fine")), receiver.holding
        finally:
            receiver.release.set()
            stop.set()
            await running
            await s.client.close()

    delivered, held = asyncio.run(scenario())
    assert delivered == 5
    assert 1 <= held <= limit  # bounded per endpoint
    assert all(row(wh, d)["status"] == "succeeded" for d in fine)


@pytest.mark.parametrize(
    "url, resolver",
    [
        ("http://127.0.0.1:{port}/in", None),
        ("http://rebound.example.com:{port}/in", FixedResolver(None, "127.0.0.1")),
        ("http://10.0.0.7:{port}/in", None),
        ("http://169.254.169.254:{port}/latest", None),
    ],
    ids=["loopback", "dns-to-loopback", "10/8", "metadata"],
)
def test_internal_targets_are_refused_when_connecting(wh, receiver, url, resolver):
    clock = Clock()
    eid, space = endpoint(wh, url.format(port=receiver.port))
    delivery = enqueue(wh, eid, space, clock.now)

    async def scenario() -> None:
        s = sender(wh, clock, TargetPolicy(allow_http=True), resolver=resolver)
        try:
            await turn(s)
        finally:
            await s.client.close()

    asyncio.run(scenario())
    state = row(wh, delivery)
    assert state["error"].startswith("target_refused"), state
    assert receiver.received == []


def test_an_endpoint_failing_for_the_whole_window_is_disabled_with_an_event(wh, receiver):
    receiver.modes["/dead"] = "fail"
    clock = Clock()
    eid, space = endpoint(wh, receiver.url("/dead"))
    enqueue(wh, eid, space, clock.now)

    async def scenario() -> None:
        s = sender(wh, clock)
        try:
            await turn(s)  # failing since now
            assert wh.webhooks.repository.get(eid).spec.enabled
            clock.advance(3600)
            await turn(s)  # the retry fails an hour later: disable_after_hours=1
        finally:
            await s.client.close()

    asyncio.run(scenario())
    endpoint_now = wh.webhooks.repository.get(eid)
    assert not endpoint_now.spec.enabled
    assert "failed" in (endpoint_now.disabled_reason or "")
    last = list(wh.webhooks.events.get(eid))[-1]
    assert type(last).TOPIC == "webhook.endpoint_disabled"
    assert last.actor == "system:webhook-delivery"


def failing_since(wh: Container, endpoint_id: UUID) -> datetime | None:
    with wh.pool.connection() as conn:
        found = conn.execute(
            "SELECT failing_since FROM webhook_endpoint_health WHERE endpoint_id = %s",
            (endpoint_id,),
        ).fetchone()
    return None if found is None else found[0]


def test_re_enabling_an_endpoint_starts_a_fresh_failure_window(wh, receiver):
    receiver.modes["/again"] = "fail"
    clock = Clock()
    eid, space = endpoint(wh, receiver.url("/again"))
    enqueue(wh, eid, space, clock.now)

    async def fail_once() -> None:
        s = sender(wh, clock)
        try:
            await turn(s)
        finally:
            await s.client.close()

    asyncio.run(fail_once())
    assert failing_since(wh, eid) == clock.now
    actor = Actor(space_id=space, subject="ops")
    for enabled in (False, True):
        wh.webhooks.update_endpoint(
            actor, UpdateEndpoint(endpoint_id=eid, patch={"enabled": enabled})
        )
    events = list(wh.webhooks.events.get(eid))
    items = []
    for offset, event in enumerate(events):
        position = wh.webhooks.recorder.position_of(eid, event.originator_version)
        env = envelope(event, position)
        raw = json.dumps(env).encode()
        items.append(Item("t", 0, offset, None, raw, env, project_endpoint(env)))
    apply_batch(wh.pool, items)  # what the dispatcher does with these events
    assert failing_since(wh, eid) is None


def test_finished_deliveries_are_pruned_after_the_retention(wh, receiver):
    clock = Clock()
    eid, space = endpoint(wh, receiver.url("/pruned"))
    delivery = enqueue(wh, eid, space, clock.now)

    async def deliver() -> None:
        s = sender(wh, clock)
        try:
            await turn(s)
        finally:
            await s.client.close()

    asyncio.run(deliver())
    assert row(wh, delivery)["status"] == "succeeded"
    with wh.pool.connection() as conn:
        prune(conn, clock.now - timedelta(days=1))  # finished after that moment: kept
        assert row(wh, delivery)["status"] == "succeeded"
        pruned = prune(conn, clock.now + timedelta(days=31))
        left = conn.execute(
            "SELECT (SELECT count(*) FROM webhook_deliveries WHERE id = %s), "
            "(SELECT count(*) FROM webhook_attempts WHERE delivery_id = %s)",
            (delivery, delivery),
        ).fetchone()
    assert pruned >= 1 and left == (0, 0)
