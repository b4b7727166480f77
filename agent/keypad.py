"""Keys a phone caller presses (DTMF), gathered into one input for the agent: the digits go to
the agent as a user message once the caller presses ``#`` or pauses, so "1 2 3 4 #" is one
turn rather than five."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

PAUSE_SECONDS = 1.5
DIGITS = frozenset("0123456789*#ABCD")


def as_text(keys: str) -> str:
    return f"[The caller pressed these keys on the phone keypad: {' '.join(keys)}]"


class Keypad:
    def __init__(self, deliver: Callable[[str], None], pause: float = PAUSE_SECONDS) -> None:
        self.deliver, self.pause = deliver, pause
        self.keys = ""
        self.timer: asyncio.TimerHandle | None = None

    def press(self, digit: str) -> bool:
        """Take one key; False (and nothing kept) for anything that is not a DTMF key."""
        if len(digit) != 1 or digit not in DIGITS:
            return False
        self.keys += digit
        if self.timer is not None:
            self.timer.cancel()
        if digit == "#":
            self.flush()
        else:
            self.timer = asyncio.get_running_loop().call_later(self.pause, self.flush)
        return True

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        keys, self.keys = self.keys, ""
        if keys:
            self.deliver(as_text(keys))
