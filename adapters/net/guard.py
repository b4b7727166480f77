"""SSRF guard for URLs that operators configure (DESIGN §10): only public addresses.

Two checks, both needed. ``check_url`` runs before any connection and refuses what is wrong on
its face: a scheme other than https (http only when the policy allows it), credentials in the
URL, a literal non-public IP, and host names that only ever mean something internal. The
authoritative check is ``GuardedResolver``, installed as the HTTP client's resolver: every
address a name resolves to is checked at connect time, and aiohttp connects only to addresses
the resolver returned, so a DNS answer that changes between a validation and the connection
(DNS rebinding) cannot reach an internal address. Literal IPs never reach a resolver, which is
why ``check_url`` must run first.

``policy.allowed_networks`` opens chosen ranges (a private deployment, tests on loopback);
cloud metadata addresses stay refused whatever the policy says.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

METADATA_ADDRESSES: frozenset[Address] = frozenset(
    {
        IPv4Address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        IPv6Address("fd00:ec2::254"),  # AWS over IPv6
        IPv4Address("100.100.100.200"),  # Alibaba Cloud
    }
)
_SHARED = IPv4Network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix, IPv4 in the last 32 bits
_BROADCAST = IPv4Address("255.255.255.255")
_LOOPBACKS = (IPv4Address("127.0.0.1"), IPv6Address("::1"))


class TargetRefused(Exception):
    """A webhook or tool URL points somewhere the platform must not send requests."""

    code = "webhook_target_refused"


@dataclass(frozen=True)
class TargetPolicy:
    """Which targets are acceptable beyond public https ones."""

    allow_http: bool = False
    allowed_networks: tuple[Network, ...] = ()

    @classmethod
    def from_strings(cls, allow_http: bool, networks: Iterable[str]) -> TargetPolicy:
        """Parse CIDR strings (``"10.0.0.0/8"``); blank entries are skipped."""
        parsed: list[Network] = []
        for entry in networks:
            if not entry.strip():
                continue
            try:
                parsed.append(ip_network(entry.strip()))
            except ValueError as exc:
                message = f"allowed network {entry!r} is not a CIDR network: {exc}"
                raise ValueError(message) from None
        return cls(allow_http=allow_http, allowed_networks=tuple(parsed))

    def allows(self, address: Address) -> bool:
        return any(address in network for network in self.allowed_networks)


def check_address(address: str | Address, policy: TargetPolicy) -> None:
    """Raise ``TargetRefused`` unless ``address`` is public or inside an allowed network.

    An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, 6to4, NAT64
    ``64:ff9b::/96``) is judged by the IPv4 address it reaches.
    """
    if isinstance(address, str):
        try:
            addr: Address = ip_address(address)
        except ValueError:
            raise TargetRefused(f"{address!r} is not an IP address") from None
    else:
        addr = address
    plain = IPv6Address(addr.packed) if isinstance(addr, IPv6Address) else addr  # no %scope
    embedded = _embedded_ipv4(plain)
    candidates: tuple[Address, ...] = (plain,) if embedded is None else (plain, embedded)
    for candidate in candidates:
        if candidate in METADATA_ADDRESSES:
            raise TargetRefused(_describe(addr, embedded, "a cloud metadata address"))
    if any(policy.allows(candidate) for candidate in candidates):
        return
    reason = _non_public_reason(plain if embedded is None else embedded)
    if reason is not None:
        raise TargetRefused(_describe(addr, embedded, reason))


def check_url(url: str, policy: TargetPolicy) -> None:
    """Static checks on a URL before any connection; raise ``TargetRefused`` saying why.

    Host names are decided at connect time by ``GuardedResolver``, except a few that can only
    be internal: ``*.local`` (mDNS), ``*.internal`` (cloud-internal DNS, including
    ``metadata.google.internal``), refused always; and ``localhost``/``*.localhost``, refused
    unless the policy allows a loopback address (127.0.0.1 or ::1), in which case the resolver
    still checks each address the name resolves to.
    """
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise TargetRefused(f"the URL is not valid: {exc}") from None
    scheme = parsed.scheme.lower()
    if not scheme:
        raise TargetRefused("the URL must be absolute and start with https://")
    if scheme == "http" and not policy.allow_http:
        raise TargetRefused("plain http is not allowed for this URL; use https")
    if scheme not in ("http", "https"):
        raise TargetRefused(f"the URL scheme {scheme!r} is not allowed; use https")
    if not parsed.raw_host:
        raise TargetRefused("the URL has no host")
    if parsed.user is not None or parsed.password is not None:
        raise TargetRefused(
            "the URL must not contain credentials (user:password@); "
            "verify deliveries with the webhook signature instead"
        )
    _check_host(parsed.raw_host, parsed.host or parsed.raw_host, policy)


class GuardedResolver(AbstractResolver):
    """A resolver that refuses a name if any address it resolves to is refused.

    ``inner`` does the lookup (aiohttp's default resolver, created on first use inside the
    running loop, when none is given). A name resolving to a mix of public and internal
    addresses is refused as a whole. ``close()`` closes the inner resolver.
    """

    def __init__(self, policy: TargetPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                check_address(result["host"], self._policy)
            except TargetRefused as exc:
                raise TargetRefused(f"{host} resolves to a refused address: {exc}") from None
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def _check_host(raw_host: str, host: str, policy: TargetPolicy) -> None:
    # Mirror aiohttp's test for "this host is an IP literal": such hosts skip the resolver,
    # so each must be a canonical address that passes check_address here.
    if ":" in raw_host or raw_host.replace(".", "").isdigit():
        try:
            addr = ip_address(host)
        except ValueError:
            raise TargetRefused(f"{host} is not a canonical IP address") from None
        check_address(addr, policy)
        return
    name = raw_host.rstrip(".").lower()
    if name == "metadata.google.internal":
        raise TargetRefused(f"{name} is a cloud metadata host name")
    if name.endswith(".internal"):
        raise TargetRefused(f"{name} is an internal host name")
    if name.endswith(".local"):
        raise TargetRefused(f"{name} is a local-network (mDNS) host name")
    if (name == "localhost" or name.endswith(".localhost")) and not any(
        policy.allows(loopback) for loopback in _LOOPBACKS
    ):
        raise TargetRefused(f"{name} is a loopback host name")


def _embedded_ipv4(addr: Address) -> IPv4Address | None:
    if isinstance(addr, IPv4Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64:
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def _non_public_reason(addr: Address) -> str | None:
    if addr.is_unspecified:
        return "an unspecified address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        return "a link-local address"
    if addr in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if addr.is_multicast:
        return "a multicast address"
    if addr == _BROADCAST:
        return "a broadcast address"
    if isinstance(addr, IPv6Address) and addr.is_site_local:
        return "a site-local address"
    if addr.is_reserved:
        return "a reserved address"
    if addr.is_private:
        return "a private address"
    if not addr.is_global:
        return "not a public address"
    return None


def _describe(addr: Address, embedded: IPv4Address | None, reason: str) -> str:
    if embedded is None:
        return f"{addr} is {reason}"
    return f"{addr} embeds {embedded}, which is {reason}"
