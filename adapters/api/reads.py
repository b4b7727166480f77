"""Read-your-writes for the HTTP API: wait, bounded, until a read model reached a version.

A wait costs no worker thread: it sleeps on the event loop, and each poll borrows a thread and a
pooled connection only for its query (about a millisecond). The read models' query functions
are synchronous psycopg, shared with every other route; an async pool would be a second set of
connections to size and keep idle, for the same short queries.

Two bounds, per API process, keep one space's waits away from everyone else's reads:

- at most ``api.max_waits_per_space`` waits of one space poll at once. Further waits of that
  space queue for a slot, first come first served, within their own deadline — a queued wait
  holds no thread and no connection; a wait that finds ``api.max_queued_waits_per_space`` already
  queued answers 429 ``too_many_waits``.
- the polls of every space together run on at most ``api.wait_pool_share`` of the PostgreSQL pool
  (their own thread limiter, at least one), so plain reads always find connections and threads.

A wait answers 503 ``read_model_behind`` when ``api.read_wait_seconds`` have passed, queued or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Request

from adapters.api.errors import ApiError

Row = dict[str, Any]
Fetch = Callable[[Any], Row | None]
FIRST_DELAY, LONGEST_DELAY = 0.005, 0.05  # between polls: doubling, capped


@dataclass
class _Space:
    polling: int = 0
    queue: deque[asyncio.Future[None]] = field(default_factory=deque)


class _LoopState:
    """What the waits of one event loop share (a process serves on one loop; tests make more)."""

    def __init__(self, polls: int) -> None:
        self.spaces: dict[str, _Space] = {}
        self.polls = anyio.CapacityLimiter(polls)


class WaitGate:
    """Slots for waiting reads, per space, and a limiter for their polls, over every space."""

    def __init__(self, per_space: int, queued_per_space: int, polls: int) -> None:
        self.per_space = per_space
        self.queued_per_space = queued_per_space
        self.polls = max(1, polls)
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_settings(cls, settings: Any) -> WaitGate:
        api = settings.api
        polls = int(settings.postgres.pool_max * api.wait_pool_share)
        return cls(api.max_waits_per_space, api.max_queued_waits_per_space, polls)

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState(self.polls)
        return state

    def waits(self, space_id: str) -> tuple[int, int]:
        """How many waits of ``space_id`` poll and how many queue (on the running loop)."""
        space = self._state().spaces.get(space_id)
        return (space.polling, len(space.queue)) if space else (0, 0)

    async def acquire(self, space_id: str, timeout: float) -> None:
        """A polling slot for one wait of ``space_id``, at once or in turn within ``timeout``
        seconds (else ``TimeoutError``); 429 ``too_many_waits`` when the space's queue is full."""
        spaces = self._state().spaces
        space = spaces.setdefault(space_id, _Space())
        if space.polling < self.per_space and not space.queue:
            space.polling += 1
            return
        if len(space.queue) >= self.queued_per_space:
            raise ApiError(
                429, "too_many_waits",
                f"Your space already has {space.polling + len(space.queue)} reads waiting for a "
                "min version; retry once some have answered.", headers={"Retry-After": "1"},
            )  # fmt: skip
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        space.queue.append(turn)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await turn
        except BaseException:  # the deadline, or the request was cancelled
            if turn.done() and not turn.cancelled():
                self.release(space_id)  # the slot came just now: pass it on
            else:
                with contextlib.suppress(ValueError):
                    space.queue.remove(turn)
            raise

    def release(self, space_id: str) -> None:
        """Give the slot back: to the next queued wait of the space, if any."""
        spaces = self._state().spaces
        space = spaces[space_id]
        while space.queue:
            turn = space.queue.popleft()
            if not turn.done():
                turn.set_result(None)  # still counted as polling: it is the next wait's now
                return
        space.polling -= 1
        if space.polling == 0:
            del spaces[space_id]

    async def poll(self, query: Callable[[], Row | None]) -> Row | None:
        """Run one poll's query in a thread, within the polls' share of the pool."""
        return await anyio.to_thread.run_sync(query, limiter=self._state().polls)


def gate_of(request: Request) -> WaitGate:
    """The app's gate, made from its container's settings on first use."""
    state = request.app.state
    gate: WaitGate | None = getattr(state, "waits", None)
    if gate is None:
        gate = state.waits = WaitGate.from_settings(state.container.settings)
    return gate


async def read_until(
    request: Request,
    space_id: str,
    fetch: Fetch,
    ready: Callable[[Row | None], bool],
    *,
    wait: bool = True,
) -> tuple[Row | None, bool]:
    """``fetch(conn)`` until ``ready(row)``, for at most ``api.read_wait_seconds`` (one read
    when ``wait`` is false). Returns the last row read and whether it was ready."""
    container = request.app.state.container
    deadline = time.monotonic() + container.settings.api.read_wait_seconds

    def query() -> Row | None:
        with container.pool.connection() as conn:
            return fetch(conn)

    row = await anyio.to_thread.run_sync(query)  # the first read is a plain read
    if ready(row) or not wait:
        return row, ready(row)
    gate = gate_of(request)
    try:
        await gate.acquire(space_id, deadline - time.monotonic())
    except TimeoutError:
        return row, False
    try:
        delay = FIRST_DELAY
        while True:
            await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            row = await gate.poll(query)
            if ready(row):
                return row, True
            if time.monotonic() >= deadline:
                return row, False
            delay = min(delay * 2, LONGEST_DELAY)
    finally:
        gate.release(space_id)


async def read_at_least(
    request: Request, space_id: str, fetch: Fetch, wanted: int, what: str
) -> Row | None:
    """``fetch(conn)`` until its row has ``version >= wanted``; None when there is no row and no
    version was asked for. 503 ``read_model_behind`` after ``api.read_wait_seconds``."""

    def ready(row: Row | None) -> bool:
        return row["version"] >= wanted if row is not None else not wanted

    row, done = await read_until(request, space_id, fetch, ready, wait=bool(wanted))
    if not done:
        raise ApiError(
            503, "read_model_behind",
            f"The read model has not reached version {wanted} of {what} yet; "
            "retry in a moment.", headers={"Retry-After": "1"},
        )  # fmt: skip
    return row
