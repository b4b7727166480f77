"""Guarded outbound HTTP: any method, one pooled aiohttp session per event loop, every target
checked by the SSRF guard before connecting and every resolved address at connect time
(``adapters.net.guard``); no redirects, proxies or cookies; a total timeout and a response-size
limit per request. Problems come back as ``HttpResponse.error`` with a stable prefix
(``target_refused:``, ``timeout``, ``connect_error:``, ``http_error:``, ``invalid_request:``),
never raised. Used by agent tools, the agents' call webhooks and outbound webhooks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from adapters.net.guard import GuardedResolver, TargetPolicy, TargetRefused, check_url

MAX_RESPONSE_BYTES = 16 * 1024


@dataclass(frozen=True)
class HttpResponse:
    """One guarded request; ``status_code`` is None when no response head arrived."""

    status_code: int | None
    latency_ms: int
    error: str | None
    body: bytes = b""
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


class GuardedHttpClient:
    """Any-method HTTP requests through one pooled aiohttp session guarded against SSRF.

    With a timeout and a response limit per request: ``check_url`` before connecting, every resolved
    address checked by ``GuardedResolver``, no redirects, proxies or cookies, and the session is
    bound to the event loop it first ran in (one client per job's loop). ``resolver`` replaces
    the DNS lookup (tests); ``close()`` closes it.
    """

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        resolver: AbstractResolver | None = None,
        max_connections: int = 256,
        max_connections_per_host: int = 32,
    ) -> None:
        self._policy = policy
        self._resolver = GuardedResolver(policy, resolver)
        self._limits = (max_connections, max_connections_per_host)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        query: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        timeout_seconds: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> HttpResponse:
        """Send one request; problems come back as ``HttpResponse.error``, never raised."""
        try:
            target = URL(url)
            if query:
                target = target.extend_query(list(query))
            check_url(str(target), self._policy)
        except TargetRefused as exc:
            return HttpResponse(None, 0, f"target_refused: {exc}")
        except (TypeError, ValueError) as exc:
            return HttpResponse(None, 0, f"invalid_request: {_detail(exc)}")
        session = self._client_session()
        status: int | None = None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_seconds):
                async with session.request(
                    method, target, headers=dict(headers or {}), data=body, allow_redirects=False
                ) as response:
                    status = response.status
                    content, truncated = await _read_prefix(response, max_response_bytes)
        except TargetRefused as exc:
            return HttpResponse(None, _since(started), f"target_refused: {exc}")
        except TimeoutError:
            return HttpResponse(status, _since(started), "timeout")
        except aiohttp.ClientConnectorError as exc:
            refused = _refusal(exc)
            if refused is not None:
                return HttpResponse(None, _since(started), f"target_refused: {refused}")
            return HttpResponse(None, _since(started), f"connect_error: {_detail(exc)}")
        except aiohttp.ClientError as exc:
            return HttpResponse(status, _since(started), f"http_error: {_detail(exc)}")
        except ValueError as exc:  # e.g. a header value aiohttp will not send
            return HttpResponse(status, _since(started), f"invalid_request: {_detail(exc)}")
        return HttpResponse(status, _since(started), None, content, truncated)

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._resolver.close()

    async def __aenter__(self) -> GuardedHttpClient:
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
            raise RuntimeError("this GuardedHttpClient is closed")
        loop = asyncio.get_running_loop()
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver,
                limit=self._limits[0],
                limit_per_host=self._limits[1],
                ttl_dns_cache=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # each request has its own
                trust_env=False,  # no proxies or .netrc credentials from the environment
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("a GuardedHttpClient is bound to the event loop it first ran in")
        return self._session


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body and whether there was more (never read)."""
    prefix = bytearray()
    while len(prefix) <= limit:
        chunk = await response.content.read(limit + 1 - len(prefix))
        if not chunk:
            break
        prefix += chunk
    return bytes(prefix[:limit]), len(prefix) > limit


def _refusal(exc: BaseException) -> TargetRefused | None:
    """The guard's refusal if aiohttp wrapped one (as ``os_error`` or a cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TargetRefused):
            return current
        wrapped = getattr(current, "os_error", None)
        if isinstance(wrapped, TargetRefused):
            return wrapped
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _detail(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
