"""``up`` / ``down`` / ``status`` of the whole local stack, or of some of its services."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING

from infra.stack import clickhouse, kafka, livekit, postgres, sipd
from infra.stack.common import Echo, ServiceStatus, StackError
from infra.stack.system import make_dirs

if TYPE_CHECKING:
    from infra.settings import Settings

# Start order; ``down`` goes the other way.
SERVICES: dict[str, ModuleType] = {
    postgres.NAME: postgres,
    clickhouse.NAME: clickhouse,
    kafka.NAME: kafka,
    livekit.NAME: livekit,
    sipd.NAME: sipd,
}


def _select(services: Sequence[str] | None) -> list[ModuleType]:
    if not services:
        return list(SERVICES.values())
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise StackError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    return [m for name, m in SERVICES.items() if name in services]


@contextmanager
def _lock(settings: Settings, echo: Echo) -> Iterator[None]:
    """One ``up``/``down`` at a time per stack folder (a second one waits)."""
    make_dirs(None, settings.stack.root, mode=0o755)
    with open(settings.stack.root / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo("[stack] another `stack up/down` holds the lock; waiting...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def up(settings: Settings, echo: Echo = print, services: Sequence[str] | None = None) -> None:
    """Install what is missing, start what is stopped, wait until each service answers.

    Idempotent: services already running and answering are left as they are.
    Raises StackError naming the service and the problem (with its log's tail).
    """
    with _lock(settings, echo):
        for module in _select(services):
            began = time.monotonic()
            module.up(settings, echo)
            echo(f"[{module.NAME}] ready ({time.monotonic() - began:.1f}s)")


def down(settings: Settings, echo: Echo = print, services: Sequence[str] | None = None) -> None:
    """Stop the services that ``up`` started (found by their pid files); data stays."""
    with _lock(settings, echo):
        errors: list[str] = []
        for module in reversed(_select(services)):
            try:
                module.down(settings, echo)
            except StackError as exc:
                errors.append(str(exc))
        if errors:
            raise StackError("\n".join(errors))


def status(settings: Settings, services: Sequence[str] | None = None) -> list[ServiceStatus]:
    """Name, port, pid (of the process ``up`` started, else None) and whether it answers."""
    return [module.status(settings) for module in _select(services)]
