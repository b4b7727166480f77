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
bodies carry customer data; the ``Outcome`` is the record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver

from adapters.net.guard import GuardedResolver, TargetPolicy, TargetRefused, check_url


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
    """Sends webhook POSTs through one pooled aiohttp session guarded against SSRF.

    The session is created on first use inside the running event loop and is bound to it.
    ``resolver`` replaces aiohttp's default DNS resolver (tests pass one with fixed answers);
    either way every address it returns goes through the guard, and ``close()`` closes it.
    """

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
        self._policy = policy
        self._timeout = timeout_seconds
        self._max_response_bytes = max_response_bytes
        self._resolver = GuardedResolver(policy, resolver)
        self._max_connections = max_connections
        self._max_connections_per_host = max_connections_per_host
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Outcome:
        """POST ``body`` to ``url``; delivery problems come back as ``Outcome.error``."""
        try:
            check_url(url, self._policy)
        except TargetRefused as exc:
            return Outcome(None, 0, f"target_refused: {exc}")
        session = self._client_session()
        status: int | None = None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                async with session.post(
                    url, data=body, headers=dict(headers), allow_redirects=False
                ) as response:
                    status = response.status
                    prefix = await _read_prefix(response, self._max_response_bytes)
        except TargetRefused as exc:
            return Outcome(None, _since(started), f"target_refused: {exc}")
        except TimeoutError:
            return Outcome(status, _since(started), "timeout")
        except aiohttp.ClientConnectorError as exc:
            refused = _refusal(exc)
            if refused is not None:
                return Outcome(None, _since(started), f"target_refused: {refused}")
            return Outcome(None, _since(started), f"connect_error: {_detail(exc)}")
        except aiohttp.ClientError as exc:
            return Outcome(status, _since(started), f"http_error: {_detail(exc)}")
        text = prefix.decode("utf-8", errors="replace")
        return Outcome(status, _since(started), None, text)

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._resolver.close()

    async def __aenter__(self) -> WebhookClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _client_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this WebhookClient is closed")
        loop = asyncio.get_running_loop()
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver,
                limit=self._max_connections,
                limit_per_host=self._max_connections_per_host,
                ttl_dns_cache=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                trust_env=False,  # no proxies or .netrc credentials from the environment
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("a WebhookClient is bound to the event loop it first ran in")
        return self._session


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the body; the rest is never read (the connection is closed)."""
    prefix = bytearray()
    while len(prefix) < limit:
        chunk = await response.content.read(limit - len(prefix))
        if not chunk:
            break
        prefix += chunk
    return bytes(prefix)


def _refusal(exc: BaseException) -> TargetRefused | None:
    """The guard's refusal if aiohttp wrapped one (as ``os_error`` or the cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TargetRefused):
            return current
        seen.add(id(current))
        wrapped = getattr(current, "os_error", None)
        if isinstance(wrapped, TargetRefused):
            return wrapped
        current = current.__cause__ or current.__context__
    return None


def _detail(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
