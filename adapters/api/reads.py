"""Read-your-writes for the HTTP API: wait, bounded, until a read model reached a version."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from adapters.api.errors import ApiError


def read_at_least(
    container: Any, fetch: Callable[[Any], dict[str, Any] | None], wanted: int, what: str
) -> dict[str, Any] | None:
    """``fetch(conn)`` until its row has ``version >= wanted``; None when there is no row and no
    version was asked for. 503 ``read_model_behind`` after ``api.read_wait_seconds``."""
    deadline = time.monotonic() + container.settings.api.read_wait_seconds
    delay = 0.005
    while True:
        with container.pool.connection() as conn:
            row = fetch(conn)
        if row is not None and row["version"] >= wanted:
            return row
        if row is None and not wanted:
            return None
        if time.monotonic() >= deadline:
            raise ApiError(
                503, "read_model_behind",
                f"The read model has not reached version {wanted} of {what} yet; "
                "retry in a moment.", headers={"Retry-After": "1"},
            )  # fmt: skip
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
