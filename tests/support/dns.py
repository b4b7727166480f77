"""DNS for tests: a resolver that answers names with fixed addresses (a rebinding attacker's,
or a test's own), at the boundary where aiohttp looks names up."""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult


class FixedResolver(AbstractResolver):
    """Answers ``name`` (every name when None) with ``address``."""

    def __init__(self, name: str | None, address: str) -> None:
        self.name, self.address = name, address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self.name is not None and host != self.name:
            raise OSError(f"no such host {host}")
        return [
            ResolveResult(
                hostname=host, host=self.address, port=port, family=socket.AF_INET, proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]  # fmt: skip

    async def close(self) -> None:
        pass
