"""Outbound webhooks end to end on the real stack: API -> event store -> relay -> Kafka ->
dispatcher (Faust) -> Postgres queue -> sender (a real subprocess) -> a local receiver that
verifies signatures with the reference ``standardwebhooks`` library."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters.api.app import create_app
from adapters.api.auth import JwtVerifier
from commands.agents import Actor, CreateAgent
from commands.webhooks import CreateEndpoint, new_secret
from domain.agent_config import AgentConfig
from domain.webhooks import EndpointSpec
from infra.bootstrap import Container, bootstrap
from infra.settings import Settings, WebhookSettings
from projections import webhooks as endpoint_queries
from tests.support.processes import Process, eventually

pytestmark = pytest.mark.integration

FAST = {
    "allowed_networks": ["127.0.0.1/32"],
    "retry_schedule": [0.3, 0.6, 0.6],
    "timeout_seconds": 1.0,
    "poll_seconds": 0.2,
    "lease_margin_seconds": 1.0,
}


def sender_env() -> dict[str, str]:
    return {f"VOXAGENT_WEBHOOKS__{k.upper()}": json.dumps(v) for k, v in FAST.items()}


@pytest.fixture(scope="module")
def wh_settings(pipeline_settings: Settings) -> Settings:
    return pipeline_settings.model_copy(update={"webhooks": WebhookSettings(**FAST)})


@pytest.fixture(scope="module")
def dispatcher(
    pipeline: dict, pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    proc = Process(
        "webhooks dispatch", pipeline_settings, Path(tmp_path_factory.mktemp("dispatch"))
    ).start()
    container = bootstrap(pipeline_settings)
    try:
        actor = Actor(space_id="wh-canary", subject="fixture")
        spec = EndpointSpec(url="https://hooks.example.com/canary", event_types=["agent.*"])
        made = container.webhooks.create_endpoint(actor, CreateEndpoint(spec=spec))

        def projected() -> bool:
            with container.pool.connection() as conn:
                return endpoint_queries.get_endpoint(conn, "wh-canary", made.id) is not None

        eventually(projected, timeout=120, what="the canary endpoint", processes=(proc,))
        yield proc
    finally:
        container.close()
        proc.stop()


@pytest.fixture(scope="module")
def wh_container(wh_settings: Settings, issuer) -> Iterator[Container]:
    container = bootstrap(wh_settings, verifier=JwtVerifier(issuer.auth_settings()))
    yield container
    container.close()


@pytest.fixture
def api(wh_container: Container, dispatcher: Process) -> Iterator[TestClient]:
    with TestClient(create_app(wh_container)) as client:
        yield client


@pytest.fixture
def sender(wh_settings: Settings, tmp_path: Path) -> Iterator[Process]:
    proc = Process("webhooks send", wh_settings, tmp_path, env=sender_env()).start()
    yield proc
    proc.stop()


def space() -> str:
    return f"wh-{uuid.uuid4().hex[:10]}"


def create_endpoint(api, issuer, sp, url, types=("agent.*",), **extra) -> dict:
    body = {"url": url, "event_types": list(types), **extra}
    resp = api.post("/api/webhooks", json=body, headers=issuer.headers(sp))
    assert resp.status_code == 201, resp.text
    return resp.json()


def create_agents(wh_container: Container, sp: str, n: int) -> list[str]:
    """Agents created through the command side; returns their agent.created event ids."""
    from domain.contract import event_id

    actor = Actor(space_id=sp, subject="test")
    made = [
        wh_container.agents.create_agent(actor, CreateAgent(config=AgentConfig(name=f"a{i}")))
        for i in range(n)
    ]
    return [event_id(r.id, 1) for r in made]


def deliveries(api, issuer, sp, endpoint_id, **params) -> list[dict]:
    resp = api.get(
        f"/api/webhooks/{endpoint_id}/deliveries", params={"limit": 200, **params},
        headers=issuer.headers(sp),
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


# -- endpoints ----------------------------------------------------------------------------
def test_endpoint_lifecycle_and_the_secret_is_shown_only_at_creation(api, issuer):
    sp = space()
    made = create_endpoint(api, issuer, sp, "https://hooks.example.com/a", ["call.*"])
    assert made["secret"].startswith("whsec_") and made["secret_version"] == 1
    got = api.get(f"/api/webhooks/{made['id']}?min_version=1", headers=issuer.headers(sp))
    assert got.status_code == 200 and "secret" not in got.json()
    assert got.json()["event_types"] == ["call.*"]

    patched = api.patch(
        f"/api/webhooks/{made['id']}", json={"event_types": ["call.ended", "agent.*"]},
        headers={**issuer.headers(sp), "If-Match": '"1"'},
    )  # fmt: skip
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] == 2 and "secret" not in patched.json()
    listed = api.get("/api/webhooks", headers=issuer.headers(sp)).json()
    eventually(lambda: api.get("/api/webhooks", headers=issuer.headers(sp)).json()["total"] == 1)
    assert all("secret" not in item for item in listed["items"])

    stale = api.patch(
        f"/api/webhooks/{made['id']}", json={"enabled": False},
        headers={**issuer.headers(sp), "If-Match": '"1"'},
    )  # fmt: skip
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "version_mismatch"

    gone = api.delete(f"/api/webhooks/{made['id']}", headers=issuer.headers(sp))
    assert gone.status_code == 204
    again = api.get(f"/api/webhooks/{made['id']}?min_version=3", headers=issuer.headers(sp))
    assert again.status_code in (404, 503)
    eventually(
        lambda: (
            api.get(f"/api/webhooks/{made['id']}", headers=issuer.headers(sp)).status_code == 404
        )
    )


@pytest.mark.parametrize(
    "body, code",
    [
        ({"url": "https://x.example.com", "event_types": ["call.endd"]}, "invalid_request"),
        ({"url": "https://x.example.com", "event_types": ["nope.*"]}, "invalid_request"),
        ({"url": "ftp://x.example.com"}, "invalid_request"),
        ({"url": "https://x.example.com", "secret": "whsec_short"}, "invalid_request"),
        ({"url": "http://10.1.2.3/hook"}, "webhook_target_refused"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "webhook_target_refused"),
        ({"url": "http://[::ffff:10.0.0.1]/hook"}, "webhook_target_refused"),
        ({"url": "http://metadata.google.internal/x"}, "webhook_target_refused"),
    ],
)
def test_bad_endpoints_are_refused_with_a_stable_code_and_nothing_is_written(
    api, issuer, body, code
):
    sp = space()
    resp = api.post("/api/webhooks", json=body, headers=issuer.headers(sp))
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == code
    assert api.get("/api/webhooks", headers=issuer.headers(sp)).json()["total"] == 0


def test_another_space_sees_and_changes_nothing_on_any_route(api, issuer):
    owner, other = space(), space()
    made = create_endpoint(api, issuer, owner, "https://hooks.example.com/mine")
    eid = made["id"]
    eventually(lambda: api.get(f"/api/webhooks/{eid}", headers=issuer.headers(owner)).is_success)
    h = issuer.headers(other)
    some = uuid.uuid4()
    since = {"since": datetime.now(UTC).isoformat()}
    routes = [
        ("GET", f"/api/webhooks/{eid}", None),
        ("PATCH", f"/api/webhooks/{eid}", {"enabled": False}),
        ("DELETE", f"/api/webhooks/{eid}", None),
        ("POST", f"/api/webhooks/{eid}/rotate-secret", {}),
        ("POST", f"/api/webhooks/{eid}/test", {}),
        ("GET", f"/api/webhooks/{eid}/deliveries", None),
        ("GET", f"/api/webhooks/{eid}/deliveries/{some}", None),
        ("POST", f"/api/webhooks/{eid}/deliveries/{some}/replay", None),
        ("POST", f"/api/webhooks/{eid}/replay", since),
        ("GET", f"/api/webhooks/{eid}/stats", None),
    ]
    for method, path, body in routes:
        resp = api.request(method, path, json=body, headers=h)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["error"]["code"] == "webhook_endpoint_not_found"
    assert api.get("/api/webhooks", headers=h).json()["total"] == 0
    assert api.get("/api/webhooks/stats", headers=h).json()["pending"] == 0
    for method, path, body in routes[:1]:
        assert api.request(method, path, json=body, headers={}).status_code == 401
    mine = api.get(f"/api/webhooks/{eid}", headers=issuer.headers(owner)).json()
    assert mine["enabled"] is True and mine["version"] == 1


# -- delivery -----------------------------------------------------------------------------
def test_events_arrive_signed_with_the_event_id_and_the_envelope_as_body(
    api, issuer, wh_container, receiver, sender
):
    sp = space()
    made = create_endpoint(api, issuer, sp, receiver.url("/signed"))
    eventually(
        lambda: api.get(f"/api/webhooks/{made['id']}", headers=issuer.headers(sp)).is_success
    )
    ids = create_agents(wh_container, sp, 3)
    eventually(lambda: len(receiver.on("/signed")) >= 3, timeout=60, processes=(sender,))
    got = receiver.on("/signed")
    assert sorted(r.webhook_id for r in got) == sorted(ids)
    for r in got:
        assert r.verifies_with(made["secret"])
        assert not r.verifies_with(new_secret())
        env = r.envelope
        assert env["event_id"] == r.webhook_id and env["type"] == "agent.created"
        assert env["space_id"] == sp and "secret" not in json.dumps(env)

    def recorded() -> list[dict]:
        items = deliveries(api, issuer, sp, made["id"], status="succeeded")
        return items if len(items) == 3 else []

    items = eventually(recorded, processes=(sender,))
    detail = api.get(
        f"/api/webhooks/{made['id']}/deliveries/{items[0]['id']}", headers=issuer.headers(sp)
    ).json()
    assert detail["attempt_log"][0]["status_code"] == 200
    assert detail["attempt_log"][0]["response_body"] == "ok"
    assert detail["payload"]["event_id"] == detail["event_id"]
    stats = api.get(f"/api/webhooks/{made['id']}/stats", headers=issuer.headers(sp)).json()
    assert stats["delivered_last_hour"] == 3 and stats["pending"] == 0
    assert stats["lag_p99_ms"] is not None


def test_a_receiver_that_is_down_then_up_gets_every_event_once_with_stable_ids(
    api, issuer, wh_container, receiver, sender
):
    sp = space()
    made = create_endpoint(api, issuer, sp, receiver.url("/flaky"))
    eventually(
        lambda: api.get(f"/api/webhooks/{made['id']}", headers=issuer.headers(sp)).is_success
    )
    receiver.stop()  # down: connections refused
    ids = create_agents(wh_container, sp, 5)

    def all_failed_once() -> bool:
        items = deliveries(api, issuer, sp, made["id"])
        return len(items) == 5 and all(i["attempts"] >= 1 for i in items)

    eventually(all_failed_once, timeout=60, processes=(sender,))
    first = deliveries(api, issuer, sp, made["id"])[0]
    detail = api.get(
        f"/api/webhooks/{made['id']}/deliveries/{first['id']}", headers=issuer.headers(sp)
    ).json()
    assert detail["attempt_log"][0]["error"].startswith("connect_error")
    receiver.start()  # up again, same port
    eventually(
        lambda: {r.webhook_id for r in receiver.on("/flaky")} == set(ids),
        timeout=60, processes=(sender,),
    )  # fmt: skip
    got = [r.webhook_id for r in receiver.on("/flaky")]
    assert sorted(got) == sorted(ids)  # each once: failed attempts never reached it
    assert all(r.verifies_with(made["secret"]) for r in receiver.on("/flaky"))


def test_kill_9_of_the_sender_mid_retry_loses_nothing_and_keeps_the_ids(
    api, issuer, wh_container, wh_settings, receiver, tmp_path
):
    sp = space()
    made = create_endpoint(api, issuer, sp, receiver.url("/killed"))
    eventually(
        lambda: api.get(f"/api/webhooks/{made['id']}", headers=issuer.headers(sp)).is_success
    )
    receiver.modes["/killed"] = "fail"
    first = Process("webhooks send", wh_settings, tmp_path, env=sender_env()).start()
    ids = create_agents(wh_container, sp, 4)
    try:
        eventually(lambda: len(receiver.on("/killed")) >= 4, timeout=60, processes=(first,))
        receiver.modes["/killed"] = "hold"  # the retries hang in the receiver...
        eventually(lambda: receiver.holding >= 1, timeout=30, processes=(first,))
        first.kill9()  # ...and their sender dies before it can record them
    finally:
        first.stop()
    receiver.modes["/killed"] = "ok"
    receiver.release.set()
    second = Process("webhooks send", wh_settings, tmp_path, env=sender_env()).start()
    try:

        def all_succeeded() -> bool:
            items = deliveries(api, issuer, sp, made["id"], status="succeeded")
            return len(items) == 4

        eventually(all_succeeded, timeout=90, processes=(second,))
    finally:
        second.stop()
    got = receiver.on("/killed")
    assert {r.webhook_id for r in got} == set(ids)  # nothing lost, no new id
    assert all(r.verifies_with(made["secret"]) for r in got)


def test_secret_rotation_signs_with_both_secrets_during_the_overlap_only(
    api, issuer, receiver, sender
):
    sp = space()
    made = create_endpoint(api, issuer, sp, receiver.url("/rotate"), ["call.ended"])
    old = made["secret"]
    eid = made["id"]
    eventually(lambda: api.get(f"/api/webhooks/{eid}", headers=issuer.headers(sp)).is_success)
    rotated = api.post(
        f"/api/webhooks/{eid}/rotate-secret", json={"overlap_seconds": 3600},
        headers=issuer.headers(sp),
    )  # fmt: skip
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and rotated.json()["secret_version"] == 2
    expires = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    test = api.post(f"/api/webhooks/{eid}/test", json={}, headers=issuer.headers(sp))
    assert test.status_code == 202
    eventually(lambda: len(receiver.on("/rotate")) == 1, processes=(sender,))
    during = receiver.on("/rotate")[0]
    assert during.verifies_with(old) and during.verifies_with(new)
    assert during.envelope["type"] == "webhook.test"
    assert during.webhook_id == test.json()["event_id"]

    again = api.post(
        f"/api/webhooks/{eid}/rotate-secret", json={"overlap_seconds": 0},
        headers=issuer.headers(sp),
    )  # fmt: skip
    newest = again.json()["secret"]
    api.post(f"/api/webhooks/{eid}/test", json={}, headers=issuer.headers(sp))
    eventually(lambda: len(receiver.on("/rotate")) == 2, processes=(sender,))
    after = receiver.on("/rotate")[1]
    assert after.verifies_with(newest)
    assert not after.verifies_with(new) and not after.verifies_with(old)


def test_a_failed_delivery_is_replayed_with_the_same_id(
    api, issuer, wh_container, receiver, sender
):
    sp = space()
    made = create_endpoint(api, issuer, sp, receiver.url("/replay"))
    eid = made["id"]
    eventually(lambda: api.get(f"/api/webhooks/{eid}", headers=issuer.headers(sp)).is_success)
    receiver.modes["/replay"] = "fail"
    (event,) = create_agents(wh_container, sp, 1)

    def failed() -> list[dict]:
        return deliveries(api, issuer, sp, eid, status="failed")

    (delivery,) = eventually(failed, timeout=60, processes=(sender,))
    assert delivery["attempts"] == 1 + len(FAST["retry_schedule"])
    assert delivery["last_status_code"] == 500 and delivery["next_attempt_at"] is None
    assert len(receiver.on("/replay")) == delivery["attempts"]

    receiver.modes["/replay"] = "ok"
    resp = api.post(
        f"/api/webhooks/{eid}/replay", json={"since": (datetime.now(UTC) - timedelta(hours=1))
                                             .isoformat()}, headers=issuer.headers(sp),
    )  # fmt: skip
    assert resp.status_code == 202 and resp.json() == {"replayed": 1}
    eventually(lambda: deliveries(api, issuer, sp, eid, status="succeeded"), processes=(sender,))
    last = receiver.on("/replay")[-1]
    assert last.webhook_id == event and last.verifies_with(made["secret"])
    one = api.post(
        f"/api/webhooks/{eid}/deliveries/{delivery['id']}/replay", headers=issuer.headers(sp)
    )
    assert one.status_code == 202
    eventually(lambda: len(receiver.on("/replay")) == delivery["attempts"] + 2,
               processes=(sender,))  # fmt: skip
    assert receiver.on("/replay")[-1].webhook_id == event


def test_deleting_an_endpoint_fails_its_pending_deliveries(api, issuer, wh_container):
    sp = space()
    made = create_endpoint(api, issuer, sp, "https://hooks.example.com/deleted")
    eid = made["id"]
    eventually(lambda: api.get(f"/api/webhooks/{eid}", headers=issuer.headers(sp)).is_success)
    create_agents(wh_container, sp, 2)  # no sender runs: they stay pending

    def states() -> list[tuple[str, str | None]]:
        with wh_container.pool.connection() as conn:
            return conn.execute(
                "SELECT status, last_error FROM webhook_deliveries WHERE endpoint_id = %s",
                (eid,),
            ).fetchall()

    eventually(lambda: states() == [("pending", None)] * 2)
    assert api.delete(f"/api/webhooks/{eid}", headers=issuer.headers(sp)).status_code == 204
    eventually(lambda: states() == [("failed", "endpoint_deleted")] * 2)


def test_a_deleted_endpoint_is_not_found_even_when_a_version_is_awaited(api, issuer):
    sp = space()
    made = create_endpoint(api, issuer, sp, "https://hooks.example.com/gone")
    gone = api.delete(f"/api/webhooks/{made['id']}", headers=issuer.headers(sp))
    version = int(gone.headers["ETag"].strip('"'))
    resp = api.get(f"/api/webhooks/{made['id']}?min_version={version}", headers=issuer.headers(sp))
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "webhook_endpoint_not_found"
