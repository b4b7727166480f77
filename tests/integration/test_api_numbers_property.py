"""Property: whatever number a session write carries (usage quantities, transcript offsets), the
API either accepts it (201) and the read model — fed through the relay, Kafka and the projectors
— reaches its version and returns it, or refuses it (422 ``invalid_request``) and stores
nothing. It refuses exactly what the columns cannot hold (docs/api.md#numbers-and-times)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration import test_api_text as base
from tests.integration.test_api_text import positions, send, space

pytestmark = pytest.mark.integration
api = base.api  # the fixture: the client with its issuer and container

MILLIS_MAX = 4_294_967_295  # the oracle, written out: ClickHouse UInt32
QUANTITY_MAX = 1e9
MILLIS = st.one_of(
    st.integers(0, 2**70),
    st.sampled_from([MILLIS_MAX, MILLIS_MAX + 1, 2**31, 2**63 - 1, 2**63, 0]),
)
QUANTITY = st.one_of(
    st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    st.integers(0, 2**70),
    st.sampled_from([QUANTITY_MAX, math.nextafter(QUANTITY_MAX, math.inf), 1e300, 0.5]),
)


@pytest.fixture(scope="module")
def sessions() -> dict[str, Any]:
    return {}


def a_session(api: Any, cache: dict[str, Any]) -> tuple[str, str]:
    """One open session per test module (hypothesis reuses it: each example only adds to it)."""
    if "id" not in cache:
        sp = space()
        agent = send(api, "POST", "/api/agents", sp, {"name": "n"}).json()["id"]
        created = send(api, "POST", "/api/sessions", sp, {"agent_id": agent})
        assert created.status_code == 201, created.text
        cache.update(sp=sp, id=created.json()["id"])
    return cache["sp"], cache["id"]


def refused(api: Any, resp: Any, before: tuple[Any, ...]) -> None:
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid_request"
    assert positions(api.container) == before


def projected(api: Any, sp: str, sid: str, version: int) -> None:
    resp = send(api, "GET", f"/api/sessions/{sid}", sp, params={"min_version": version})
    assert resp.status_code == 200, resp.text


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(quantity=QUANTITY, start_ms=MILLIS, end_ms=MILLIS)
def test_any_number_is_stored_or_refused_with_nothing_stored(
    api, sessions, quantity, start_ms, end_ms
):
    sp, sid = a_session(api, sessions)
    before = positions(api.container)
    usage = {"session_id": sid, "provider": "openai", "model": "gpt-4o-mini",
             "kind": "llm_input_tokens", "quantity": quantity}  # fmt: skip
    resp = send(api, "POST", "/api/usage/events", sp, usage)
    if quantity <= QUANTITY_MAX:
        assert resp.status_code == 201, resp.text
        projected(api, sp, sid, resp.json()["version"])
    else:
        refused(api, resp, before)

    before = positions(api.container)
    body = {"speaker": "user", "text": "hi", "start_ms": start_ms, "end_ms": end_ms}
    resp = send(api, "POST", f"/api/sessions/{sid}/transcripts", sp, body)
    if start_ms <= end_ms <= MILLIS_MAX:  # (end before start is refused too)
        assert resp.status_code == 201, resp.text
        projected(api, sp, sid, resp.json()["version"])
        said = send(api, "GET", f"/api/sessions/{sid}/transcripts", sp).json()
        assert any(t["start_ms"] == start_ms and t["end_ms"] == end_ms for t in said)
    else:
        refused(api, resp, before)
