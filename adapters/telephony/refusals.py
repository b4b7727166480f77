"""Calls refused at the door, recorded: what every inbound entry point (Twilio's voice webhook,
the VoxImplant route, later our SIP endpoint) calls when it answers a call politely instead of
connecting it.

A call to a number we know (active but unassigned, its agent unavailable, brought by another
provider than the number's; or released, the last space that had it) is recorded as
``number.call_refused`` in that number's space, once per provider call id (a retried webhook
meets the first record). A call to a number we do not know has no aggregate and no space: it is
only logged and counted (``REFUSED``, ``NOT_RECORDED``), never written as an event.

``record_refusal`` never raises: a failure to record is logged and counted, and the caller still
gets its polite answer. The counters are the process's metrics of refusals (read them in tests
and from a debugger; they are not exported yet).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import anyio.to_thread

from adapters.services import Services
from commands.agents import Actor
from commands.numbers import RecordRefusal
from domain.phone_numbers import InvalidPhoneNumber, normalise_e164
from domain.refused_calls import REFUSAL_REASONS
from projections import number_queries

log = logging.getLogger(__name__)
UNKNOWN_NUMBER = "unknown_number"
# every refusal by (provider, reason), recorded or not; unknown numbers count as unknown_number
REFUSED: Counter[tuple[str, str]] = Counter()
# refusals not recorded, by why: unknown_number, not_authenticated, failed
NOT_RECORDED: Counter[str] = Counter()
SpaceCheck = Callable[[str], Awaitable[bool]]


def _located(
    container: Services, provider: str, e164: str | None, reason: str
) -> tuple[UUID, str, str] | None:
    """``(number_id, space_id, reason)`` of the number a refused call was for, or None when we
    do not know the number. A number the entry point did not find (``unknown_number``) may be
    another provider's number (``provider_mismatch``) or a released one (``number_released``)."""
    if not e164:
        return None
    try:
        number = normalise_e164(e164)
    except InvalidPhoneNumber:
        return None
    route = container.numbers.route(number)
    if route is not None:
        if reason == UNKNOWN_NUMBER:
            if route.provider == provider:
                return None  # nothing the number itself refused
            reason = "provider_mismatch"
        return route.number_id, route.space_id, reason
    with container.pool.connection() as conn:
        row = number_queries.released_number_for_e164(conn, number)
    if row is None:
        return None
    return UUID(str(row["id"])), str(row["space_id"]), "number_released"


async def record_refusal(
    container: Services,
    *,
    provider: str,
    e164: str | None,
    caller: str | None,
    reason: str,
    provider_call_id: str,
    space_check: SpaceCheck | None = None,
) -> UUID | None:
    """Record a call refused at the door of ``e164`` (see the module). ``reason``: one of
    ``domain.refused_calls.REFUSAL_REASONS``, or ``unknown_number`` when the entry point found
    no number it could route (it may still be a released one, or another provider's).
    ``space_check``: when the request is not authenticated yet, whether it may write into the
    space the number belongs to (VoxImplant checks the space's route token). Returns the
    refusal's id when recorded (or recorded already), None otherwise. Never raises."""
    try:
        located = await anyio.to_thread.run_sync(_located, container, provider, e164, reason)
        final = located[2] if located is not None else UNKNOWN_NUMBER
        REFUSED[(provider, final)] += 1
        if located is None:
            NOT_RECORDED[UNKNOWN_NUMBER] += 1
            log.warning("%s call %s to %s refused (%s): a number we do not know, not recorded",
                        provider, provider_call_id, e164 or "?", reason)  # fmt: skip
            return None
        number_id, space_id, final = located
        if space_check is not None and not await space_check(space_id):
            NOT_RECORDED["not_authenticated"] += 1
            log.warning("%s call %s to %s refused (%s): the request does not authenticate for "
                        "the number's space, not recorded", provider, provider_call_id, e164,
                        final)  # fmt: skip
            return None
        if final not in REFUSAL_REASONS:
            raise ValueError(f"not a refusal reason: {final!r}")
        cmd = RecordRefusal(
            number_id=number_id, provider=provider, caller=_caller(caller), reason=final,
            provider_call_id=provider_call_id, at=datetime.now(UTC),
        )  # type: ignore[arg-type]  # fmt: skip
        who = Actor(space_id=space_id, subject=f"system:{provider}")
        result: Any = await anyio.to_thread.run_sync(container.numbers.record_refusal, who, cmd)
    except Exception:  # noqa: BLE001 - recording must never cost the caller the polite answer
        NOT_RECORDED["failed"] += 1
        log.exception("%s call %s to %s refused (%s): recording the refusal failed",
                      provider, provider_call_id, e164 or "?", reason)  # fmt: skip
        return None
    log.info("%s call %s to %s refused (%s), recorded as %s%s", provider, provider_call_id,
             e164, final, result.id, " (again)" if result.replayed else "")  # fmt: skip
    refusal_id: UUID = result.id
    return refusal_id


def _caller(raw: str | None) -> str | None:
    """The caller id, at most 64 characters (what a refusal stores); None when empty."""
    if not raw:
        return None
    return raw[:64]
