"""Stream tokens: the signed parameter our TwiML and API put on a media stream, and the only
thing that lets a provider's WebSocket into a call's room.

A token is a JWT (HS256 with ``telephony.stream_secret``) naming the call, its room, the
channel it is for and an expiry; the bridge checks all of them before it joins the room.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

AUDIENCE = "voxagent-bridge"


class StreamRefused(Exception):
    """The stream cannot go into a call: ``code`` is stable, the text says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StreamGrant:
    call_id: str
    space_id: str
    agent_id: str
    agent_config_version: int
    room_name: str
    channel: str


def issue(grant: StreamGrant, secret: str, ttl_seconds: int, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {
        "aud": AUDIENCE, "iat": issued, "exp": issued + ttl_seconds, "sub": grant.call_id,
        "space": grant.space_id, "agent": grant.agent_id,
        "ver": grant.agent_config_version, "room": grant.room_name, "channel": grant.channel,
    }  # fmt: skip
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(token: str | None, secret: str, channel: str) -> StreamGrant:
    """The grant a valid token carries for this channel, or ``StreamRefused``."""
    if not token:
        raise StreamRefused("missing_token", "the stream has no `token` parameter")
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], audience=AUDIENCE,
            options={"require": ["exp", "sub", "room", "channel"]},
        )  # fmt: skip
    except jwt.ExpiredSignatureError:
        raise StreamRefused("token_expired", "the stream token has expired") from None
    except jwt.PyJWTError as exc:
        raise StreamRefused("invalid_token", f"the stream token is not valid ({exc})") from None
    if claims["channel"] != channel:
        raise StreamRefused(
            "wrong_channel", f"the token is for {claims['channel']!r} streams, not {channel!r}"
        )
    return StreamGrant(
        call_id=str(claims["sub"]), space_id=str(claims["space"]),
        agent_id=str(claims["agent"]), agent_config_version=int(claims["ver"]),
        room_name=str(claims["room"]), channel=str(claims["channel"]),
    )  # fmt: skip
