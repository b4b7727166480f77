"""Stream tokens: only what our API signed, for its channel, before it expires."""

from __future__ import annotations

import time

import jwt
import pytest

from adapters.telephony import tokens

pytestmark = pytest.mark.unit
SECRET = "s3cret-for-tests-only-0123456789abcdef"
GRANT = tokens.StreamGrant(
    call_id="0b8f6f0e-3f0e-4a43-9d4b-1d1f3c1f7a10", space_id="space-a",
    agent_id="5b1f0ad3-7a2f-4ef0-9a8e-b2f5a2a4e7c1", agent_config_version=3,
    room_name="call-0b8f6f0e-3f0e-4a43-9d4b-1d1f3c1f7a10", channel="twilio_media_streams",
)  # fmt: skip


def refusal(token: str | None, channel: str = "twilio_media_streams") -> str:
    with pytest.raises(tokens.StreamRefused) as caught:
        tokens.verify(token, SECRET, channel)
    return caught.value.code


def test_a_token_round_trips_its_grant():
    token = tokens.issue(GRANT, SECRET, ttl_seconds=60)
    assert tokens.verify(token, SECRET, "twilio_media_streams") == GRANT


def test_missing_forged_expired_and_foreign_tokens_are_refused():
    assert refusal(None) == "missing_token"
    assert refusal("") == "missing_token"
    assert refusal("not-a-jwt") == "invalid_token"
    forged = tokens.issue(GRANT, "another-secret-of-enough-length-000000", ttl_seconds=60)
    assert refusal(forged) == "invalid_token"
    expired = tokens.issue(GRANT, SECRET, ttl_seconds=60, now=time.time() - 120)
    assert refusal(expired) == "token_expired"
    good = tokens.issue(GRANT, SECRET, ttl_seconds=60)
    assert refusal(good, channel="voximplant") == "wrong_channel"


def test_a_token_for_another_audience_is_refused():
    claims = jwt.decode(tokens.issue(GRANT, SECRET, 60), SECRET, algorithms=["HS256"],
                        audience=tokens.AUDIENCE)  # fmt: skip
    other = jwt.encode({**claims, "aud": "someone-else"}, SECRET, algorithm="HS256")
    assert refusal(other) == "invalid_token"


def test_an_unsigned_token_is_refused():
    claims = jwt.decode(tokens.issue(GRANT, SECRET, 60), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert refusal(unsigned) == "invalid_token"
