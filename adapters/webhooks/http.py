"""The webhook sending client: one signed POST, bounded in time and size, redirects not followed.

``WebhookClient.post`` never raises for delivery problems; it returns an ``Outcome`` whose
``error`` starts with a stable prefix the delivery worker can branch on and operators can read:

- ``target_refused: <reason>``: the SSRF guard refused the URL (statically, or at connect time
  through ``GuardedResolver``);
- ``timeout``: no complete answer within ``timeout_seconds`` (connect, headers and the body
  prefix we read, all together);
- ``connect_error: <detail>``: no connection (DNS failure, refused port, TLS failure);
- ``http_error: <detail>``: the connection broke or the answer was not valid HTTP.

A 3xx is an answer like any other non-2xx (``error`` is None, ``ok`` is False): following it
would let a receiver send us somewhere the guard never saw. Only the first
``max_response_bytes`` of a response are read. Nothing is logged: headers carry signatures and
bodies carry customer data; the ``Outcome`` is the record. The HTTP itself is
``adapters.net.http.GuardedHttpClient``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from aiohttp.abc import AbstractResolver

from adapters.net.guard import TargetPolicy
from adapters.net.http import GuardedHttpClient


@dataclass(frozen=True)
class Outcome:
    """What happened to one POST; ``status_code`` is None when no response head arrived."""

    status_code: int | None
    latency_ms: int
    error: str | None
    response_body: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


class WebhookClient:
    """Sends webhook POSTs through one pooled, SSRF-guarded session (bound to the event loop
    it first runs in). ``resolver`` replaces the DNS lookup (tests); ``close()`` closes it."""

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        timeout_seconds: float = 15.0,
        max_response_bytes: int = 4096,
        resolver: AbstractResolver | None = None,
        max_connections: int = 512,
        max_connections_per_host: int = 0,  # unlimited: per_endpoint_concurrency bounds it
    ) -> None:
        self._timeout = timeout_seconds
        self._max_response_bytes = max_response_bytes
        self._http = GuardedHttpClient(
            policy, resolver=resolver, max_connections=max_connections,
            max_connections_per_host=max_connections_per_host,
        )  # fmt: skip

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Outcome:
        """POST ``body`` to ``url``; delivery problems come back as ``Outcome.error``."""
        response = await self._http.request(
            "POST", url, headers=headers, body=body, timeout_seconds=self._timeout,
            max_response_bytes=self._max_response_bytes,
        )  # fmt: skip
        text = response.body.decode("utf-8", errors="replace")
        return Outcome(response.status_code, response.latency_ms, response.error, text)

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> WebhookClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
