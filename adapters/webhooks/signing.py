"""Standard Webhooks signatures (https://www.standardwebhooks.com) for outbound deliveries.

A secret is ``whsec_`` + base64 of 24..64 random bytes (``commands.webhooks``).
A delivery is signed over
``"{msg_id}.{timestamp}." + body`` with HMAC-SHA256; ``webhook-signature`` holds one
``v1,<base64>`` entry per active secret, separated by spaces, so receivers keep verifying while
an operator rotates the secret. Error messages never repeat a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from commands.webhooks import secret_key

USER_AGENT = "Voxagent-Webhooks/1"


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64 HMAC-SHA256>`` signature of one delivery under one secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """The headers of one delivery, signed with every secret (several during a rotation)."""
    if not secrets:
        raise ValueError("at least one webhook secret is needed to sign a delivery")
    seconds = int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": " ".join(signature(s, msg_id, seconds, body) for s in secrets),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
