"""The SSRF guard: which addresses, URLs and resolved names webhooks may be sent to."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from adapters.net.guard import (
    GuardedResolver,
    TargetPolicy,
    TargetRefused,
    check_address,
    check_url,
)

pytestmark = pytest.mark.unit

STRICT = TargetPolicy()
LOOPBACK_ALLOWED = TargetPolicy.from_strings(allow_http=True, networks=["127.0.0.1/32"])


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("fd00::1", "private"),
        ("fe80::1", "link-local"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 around 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused_with_the_reason(address: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=reason) as refused:
        check_address(address, STRICT)

    assert refused.value.code == "webhook_target_refused"


def test_the_refusal_names_the_address() -> None:
    with pytest.raises(TargetRefused, match=r"^127\.0\.0\.1 is a loopback address$"):
        check_address("127.0.0.1", STRICT)


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:4700::1", "::ffff:93.184.216.34", "2002:5db8:d822::1"]
)
def test_public_addresses_are_accepted(address: str) -> None:
    check_address(address, STRICT)


def test_an_allowed_network_opens_its_addresses() -> None:
    check_address("127.0.0.1", LOOPBACK_ALLOWED)
    check_address("::ffff:127.0.0.1", LOOPBACK_ALLOWED)
    with pytest.raises(TargetRefused, match="loopback"):
        check_address("127.0.0.2", LOOPBACK_ALLOWED)


def test_metadata_addresses_stay_refused_even_inside_an_allowed_network() -> None:
    policy = TargetPolicy.from_strings(allow_http=False, networks=["169.254.0.0/16", "fd00::/8"])

    check_address("169.254.1.1", policy)
    for address in ("169.254.169.254", "fd00:ec2::254"):
        with pytest.raises(TargetRefused, match="cloud metadata"):
            check_address(address, policy)


def test_allowed_networks_must_be_cidrs() -> None:
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        TargetPolicy.from_strings(allow_http=False, networks=["10.0.0.0/8", "10.0.0.0/33"])

    policy = TargetPolicy.from_strings(allow_http=True, networks=[" 10.0.0.0/8 ", ""])
    assert [str(n) for n in policy.allowed_networks] == ["10.0.0.0/8"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/hook", "plain http"),
        ("ftp://example.com/hook", "scheme 'ftp'"),
        ("example.com/hook", "absolute"),
        ("https://user:secret@example.com/hook", "credentials"),
        ("https://token@example.com/hook", "credentials"),
        ("https:///hook", "no host"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://10.0.0.1/hook", "private"),
        ("https://127.1/hook", "not a canonical IP"),
        ("https://2130706433/hook", "not a canonical IP"),
        ("https://localhost/hook", "loopback host name"),
        ("https://LocalHost./hook", "loopback host name"),
        ("https://api.localhost/hook", "loopback host name"),
        ("https://printer.local/hook", "mDNS"),
        ("https://db.internal/hook", "internal host name"),
        ("https://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ],
)
def test_urls_refused_before_connecting(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=reason):
        check_url(url, STRICT)


@pytest.mark.parametrize("url", ["http://localhost/", "http://10.0.0.1/"])
def test_http_to_internal_hosts_is_refused_even_when_http_is_allowed(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, TargetPolicy(allow_http=True))


def test_the_refusal_does_not_repeat_the_url_secrets() -> None:
    with pytest.raises(TargetRefused) as refused:
        check_url("http://example.com/hook?token=s3cr3t", STRICT)

    assert "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize(
    "url", ["https://example.com/hook", "https://93.184.216.34:8443/x", "https://[2606:4700::1]/"]
)
def test_public_https_urls_pass(url: str) -> None:
    check_url(url, STRICT)


def test_http_and_localhost_pass_when_the_policy_allows_them() -> None:
    check_url("http://example.com/hook", LOOPBACK_ALLOWED)
    check_url("http://localhost:8080/hook", LOOPBACK_ALLOWED)
    check_url("http://127.0.0.1:8080/hook", LOOPBACK_ALLOWED)


class FixedResolver(AbstractResolver):
    """Answers every name with fixed addresses, as a DNS server under someone else's control."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


def resolve(resolver: AbstractResolver, host: str) -> list[ResolveResult]:
    return asyncio.run(resolver.resolve(host, 443))


def test_the_resolver_passes_public_answers_through() -> None:
    inner = FixedResolver("93.184.216.34", "2606:4700::1")

    results = resolve(GuardedResolver(STRICT, inner), "hooks.example.com")

    assert [r["host"] for r in results] == ["93.184.216.34", "2606:4700::1"]


def test_a_name_resolving_to_loopback_is_refused_at_connect_time() -> None:
    guarded = GuardedResolver(STRICT, FixedResolver("127.0.0.1"))

    with pytest.raises(TargetRefused, match="hook.example.test resolves to .*127.0.0.1.*loopback"):
        resolve(guarded, "hook.example.test")


def test_a_name_resolving_to_a_mix_of_public_and_private_addresses_is_refused() -> None:
    guarded = GuardedResolver(STRICT, FixedResolver("93.184.216.34", "10.0.0.7"))

    with pytest.raises(TargetRefused, match="10.0.0.7 is a private address"):
        resolve(guarded, "rebind.example.com")


def test_the_resolver_follows_the_policy_and_closes_the_inner_one() -> None:
    inner = FixedResolver("127.0.0.1")
    guarded = GuardedResolver(LOOPBACK_ALLOWED, inner)

    assert resolve(guarded, "hook.example.test")[0]["host"] == "127.0.0.1"
    asyncio.run(guarded.close())
    assert inner.closed
