"""The gate of read-your-writes waits: slots per space, in turn, and a bound on polls."""

from __future__ import annotations

import asyncio
import threading

import pytest

from adapters.api.errors import ApiError
from adapters.api.reads import WaitGate
from infra.settings import Settings

pytestmark = pytest.mark.unit


def test_polls_of_every_space_together_run_within_their_share_of_the_pool():
    gate = WaitGate(per_space=100, queued_per_space=0, polls=2)
    inside, most, lock, release = [0], [0], threading.Lock(), threading.Event()

    def query() -> None:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        release.wait(10)
        with lock:
            inside[0] -= 1

    async def scenario() -> None:
        polls = [asyncio.create_task(gate.poll(query)) for _ in range(10)]
        while inside[0] < 2:
            await asyncio.sleep(0.01)
        for _ in range(20):  # the others had every chance to start
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*polls)

    asyncio.run(scenario())
    assert most[0] == 2


def test_queued_waits_take_freed_slots_in_turn_and_a_full_queue_refuses():
    gate = WaitGate(per_space=1, queued_per_space=2, polls=1)
    order: list[str] = []

    async def wait(name: str) -> None:
        await gate.acquire("s", 10)
        order.append(name)

    async def scenario() -> None:
        await gate.acquire("s", 10)
        second = asyncio.create_task(wait("second"))
        await asyncio.sleep(0)
        third = asyncio.create_task(wait("third"))
        await asyncio.sleep(0)
        assert gate.waits("s") == (1, 2)
        with pytest.raises(ApiError) as refused:
            await gate.acquire("s", 10)
        assert refused.value.status == 429 and refused.value.code == "too_many_waits"
        await gate.acquire("other", 10)  # another space is not held up
        gate.release("other")
        gate.release("s")
        await second
        assert order == ["second"] and gate.waits("s") == (1, 1)
        gate.release("s")
        await third
        gate.release("s")
        assert order == ["second", "third"] and gate.waits("s") == (0, 0)

    asyncio.run(scenario())


def test_a_queued_wait_gives_up_at_its_deadline_and_leaves_the_queue():
    gate = WaitGate(per_space=1, queued_per_space=5, polls=1)

    async def scenario() -> None:
        await gate.acquire("s", 10)
        with pytest.raises(TimeoutError):
            await gate.acquire("s", 0.05)
        assert gate.waits("s") == (1, 0)
        gate.release("s")
        assert gate.waits("s") == (0, 0)

    asyncio.run(scenario())


def test_the_polls_share_comes_from_the_pool_size_and_is_at_least_one():
    settings = Settings()
    sized = settings.model_copy(
        update={"postgres": settings.postgres.model_copy(update={"pool_max": 12})}
    )
    assert WaitGate.from_settings(sized).polls == 3
    tiny = settings.model_copy(
        update={"postgres": settings.postgres.model_copy(update={"pool_max": 2})}
    )
    assert WaitGate.from_settings(tiny).polls == 1
