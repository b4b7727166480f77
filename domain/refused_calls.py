"""A call refused at the door of a number we know: one ``RefusedCall`` aggregate per call.

When a provider brings a call to a number of ours that cannot take it (unassigned, released,
its agent archived or out of credit, the call came through another provider than the number's,
a SIP trunk that did not authenticate), the caller hears a polite refusal and the refusal is
recorded as ``number.call_refused`` (on ``voxagent.numbers.v1``, in the number's space).

Why an aggregate of its own rather than an event on the number's stream: a refusal is a fact
about one call, not a change of the number. On the number's stream every refused call would
bump the number's version (an operator's ``If-Match`` would then fail because somebody rang),
collide with concurrent assignments, and grow the stream that every inbound call loads to
route. Its own aggregate has none of that, and its id is derived from the number and the
provider's call id, so a provider that retries its webhook meets the first record (the second
save collides on version 1) and the refusal is recorded once.

A number we do not know has no aggregate and no space: such calls are logged and counted by the
adapter (``adapters/telephony/refusals.py``), never recorded as events.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import DomainError
from domain.phone_numbers import PROVIDERS

REFUSAL_REASONS = (
    "number_unassigned",  # the number answers no agent
    "number_released",  # the number left the space; the provider still sends its calls
    "agent_unavailable",  # its agent is archived, or the space cannot take the call now
    "provider_mismatch",  # the call came through another provider than the number's
    "trunk_unauthenticated",  # a SIP INVITE that its trunk did not authenticate
    "codec_unsupported",  # a SIP INVITE that offered no codec we speak (G.711)
)
MAX_PROVIDER_CALL_ID = 128
_NAMESPACE = UUID("3f5d2b8e-91c4-4c6a-8d2e-7b0e4a9c1f63")


class InvalidRefusal(DomainError):
    code = "invalid_refusal"


def refusal_id(number_id: UUID, provider: str, provider_call_id: str) -> UUID:
    """The aggregate id of the refusal of ``provider``'s call ``provider_call_id`` to
    ``number_id``: the same call, retried, gets the same id."""
    return uuid5(_NAMESPACE, f"{number_id}\x1f{provider}\x1f{provider_call_id}")


class RefusedCall(Aggregate):
    TOPIC = "voxagent.RefusedCall"

    class Created(Aggregate.Created):
        """number.call_refused: the aggregate's one event."""

        TOPIC = "number.call_refused"
        SCHEMA_VERSION = 1
        space_id: str
        number_id: str
        e164: str
        provider: str
        caller: str | None
        reason: str
        provider_call_id: str
        at: str

        def apply(self, aggregate: Any) -> None:
            aggregate.space_id = self.space_id
            aggregate.number_id = UUID(self.number_id)
            aggregate.e164 = self.e164
            aggregate.provider = self.provider
            aggregate.caller = self.caller
            aggregate.reason = self.reason
            aggregate.provider_call_id = self.provider_call_id
            aggregate.at = self.at

    @classmethod
    def record(
        cls,
        *,
        space_id: str,
        number_id: UUID,
        e164: str,
        provider: str,
        caller: str | None,
        reason: str,
        provider_call_id: str,
        at: str,
    ) -> RefusedCall:
        """The refusal of one call (``at``: when, ISO 8601 UTC, given by the caller)."""
        if reason not in REFUSAL_REASONS:
            raise InvalidRefusal(
                f"reason must be one of {', '.join(REFUSAL_REASONS)}; got {reason!r}"
            )
        if provider not in PROVIDERS:
            raise InvalidRefusal(
                f"provider must be one of {', '.join(PROVIDERS)}; got {provider!r}"
            )
        if not provider_call_id or len(provider_call_id) > MAX_PROVIDER_CALL_ID:
            raise InvalidRefusal(
                f"the provider's call id must have 1..{MAX_PROVIDER_CALL_ID} characters"
            )
        return cls._create(
            cls.Created,
            id=refusal_id(number_id, provider, provider_call_id),
            space_id=space_id,
            number_id=str(number_id),
            e164=e164,
            provider=provider,
            caller=caller,
            reason=reason,
            provider_call_id=provider_call_id,
            at=at,
        )


__all__ = ["REFUSAL_REASONS", "InvalidRefusal", "RefusedCall", "refusal_id"]
