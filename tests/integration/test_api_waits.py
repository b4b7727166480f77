"""Read-your-writes waits cost no worker thread and are bounded per space: the real API (in
process, over ASGI) on the real pipeline (relay, Faust projectors, PostgreSQL read models)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import httpx
import pytest

from adapters.api.app import create_app
from adapters.api.auth import JwtVerifier
from infra.bootstrap import bootstrap

pytestmark = pytest.mark.integration

NEVER = 1_000_000_000  # a version no agent reaches


class Api:
    """An app with its own settings, an async client on it, and the issuer's headers."""

    def __init__(self, app: Any, client: httpx.AsyncClient, issuer: Any) -> None:
        self.app, self.client, self.issuer = app, client, issuer
        self.spaces: dict[str, dict[str, str]] = {}

    def headers(self, space_id: str) -> dict[str, str]:
        return self.spaces.setdefault(space_id, self.issuer.headers(space_id))

    def waits(self, space_id: str) -> tuple[int, int]:
        """(polling, queued) waits of the space, as the app's gate counts them."""
        return self.app.state.waits.waits(space_id) if hasattr(self.app.state, "waits") else (0, 0)

    async def agent(self, space_id: str, name: str = "Support") -> str:
        resp = await self.client.post(
            "/api/agents", json={"name": name}, headers=self.headers(space_id)
        )
        assert resp.status_code == 201, resp.text
        agent_id = resp.json()["id"]
        got = await self.get(space_id, agent_id, min_version=1)  # projected
        assert got.status_code == 200, got.text
        return agent_id

    async def get(self, space_id: str, agent_id: str, **params: Any) -> httpx.Response:
        return await self.client.get(
            f"/api/agents/{agent_id}", params=params, headers=self.headers(space_id)
        )

    def waiting(self, space_id: str, agent_id: str, version: int = NEVER) -> asyncio.Task[Any]:
        return asyncio.create_task(self.get(space_id, agent_id, min_version=version))


@asynccontextmanager
async def api(settings: Any, issuer: Any, **api_settings: Any) -> AsyncIterator[Api]:
    wanted = settings.model_copy(update={"api": settings.api.model_copy(update=api_settings)})
    container = bootstrap(wanted, verifier=JwtVerifier(issuer.auth_settings()))
    app = create_app(container)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, client, issuer)
    finally:
        await asyncio.to_thread(container.close)


async def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def cancelled(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def space() -> str:
    return f"space-{uuid.uuid4().hex[:10]}"


def test_a_plain_read_answers_while_another_space_holds_more_waits_than_threads(
    pipeline, pipeline_settings, issuer
):
    async def scenario() -> None:
        async with api(pipeline_settings, issuer, read_wait_seconds=120.0,
                       max_waits_per_space=1000) as a:  # fmt: skip
            attacker, victim = space(), space()
            a_agent, v_agent = await a.agent(attacker), await a.agent(victim, "Victim")
            threads = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
            waits = [a.waiting(attacker, a_agent) for _ in range(threads + 10)]
            await until(lambda: a.waits(attacker) == (threads + 10, 0), "every wait polling")

            listing = await a.client.get("/api/agents", headers=a.headers(victim))
            one = await a.get(victim, v_agent)

            pending = sum(not w.done() for w in waits)
            await cancelled(waits)
            assert listing.status_code == 200, listing.text
            assert [item["id"] for item in listing.json()["items"]] == [v_agent]
            assert one.status_code == 200 and one.json()["name"] == "Victim"
            assert pending == threads + 10  # every wait was still waiting meanwhile
            await until(lambda: a.waits(attacker) == (0, 0), "every slot given back")

    asyncio.run(scenario())


def test_waits_beyond_the_space_bound_queue_then_answer_429(pipeline, pipeline_settings, issuer):
    async def scenario() -> None:
        async with api(pipeline_settings, issuer, read_wait_seconds=120.0,
                       max_waits_per_space=2, max_queued_waits_per_space=1) as a:  # fmt: skip
            busy, other = space(), space()
            agent, other_agent = await a.agent(busy), await a.agent(other)
            polling = [a.waiting(busy, agent), a.waiting(busy, agent)]
            await until(lambda: a.waits(busy) == (2, 0), "two waits polling")
            queued = a.waiting(busy, agent)
            await until(lambda: a.waits(busy) == (2, 1), "a third wait queued")

            refused = await a.get(busy, agent, min_version=NEVER)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_waits"
            assert refused.headers["Retry-After"] == "1"
            satisfied = await a.get(busy, agent, min_version=1)  # no wait needed: no slot
            assert satisfied.status_code == 200, satisfied.text

            elsewhere = a.waiting(other, other_agent)  # another space has slots of its own
            await until(lambda: a.waits(other) == (1, 0), "the other space's wait polling")

            await cancelled(polling[:1])  # a slot frees: the queued wait takes it
            await until(lambda: a.waits(busy) == (2, 0), "the queued wait polling")
            assert not queued.done()
            await cancelled([*polling, queued, elsewhere])
            await until(lambda: a.waits(busy) == a.waits(other) == (0, 0), "slots given back")

    asyncio.run(scenario())


def test_a_queued_wait_answers_503_at_its_deadline(pipeline, pipeline_settings, issuer):
    async def scenario() -> None:
        async with api(pipeline_settings, issuer, read_wait_seconds=3.0,
                       max_waits_per_space=1) as a:  # fmt: skip
            sp = space()
            agent = await a.agent(sp)
            first = a.waiting(sp, agent)
            await until(lambda: a.waits(sp) == (1, 0), "one wait polling")
            second = a.waiting(sp, agent)
            await until(lambda: a.waits(sp) == (1, 1), "one wait queued")
            for resp in await asyncio.gather(first, second):
                assert resp.status_code == 503, resp.text
                assert resp.json()["error"]["code"] == "read_model_behind"
                assert resp.headers["Retry-After"] == "1"
            assert a.waits(sp) == (0, 0)

    asyncio.run(scenario())


def test_a_wait_returns_the_row_once_the_read_model_reaches_its_version(
    pipeline, pipeline_settings, issuer
):
    async def scenario() -> None:
        async with api(pipeline_settings, issuer, read_wait_seconds=60.0) as a:
            sp = space()
            agent = await a.agent(sp)
            by_query = a.waiting(sp, agent, version=2)
            by_header = asyncio.create_task(
                a.client.get(
                    f"/api/agents/{agent}",
                    headers={**a.headers(sp), "X-Voxagent-Min-Version": "2"},
                )
            )
            await until(lambda: a.waits(sp) == (2, 0), "both waits polling")
            patched = await a.client.patch(
                f"/api/agents/{agent}", json={"name": "Sales"}, headers=a.headers(sp)
            )
            assert patched.status_code == 200, patched.text
            for resp in await asyncio.gather(by_query, by_header):
                assert resp.status_code == 200, resp.text
                assert resp.json()["version"] == 2 and resp.json()["name"] == "Sales"
                assert resp.headers["ETag"] == '"2"'
            assert a.waits(sp) == (0, 0)

    asyncio.run(scenario())
