"""Keys a phone caller presses reach the agent as one input: on # or after a pause."""

from __future__ import annotations

import asyncio

import pytest

from agent.keypad import Keypad, as_text

pytestmark = pytest.mark.unit


def test_keys_are_gathered_until_hash():
    async def run() -> list[str]:
        got: list[str] = []
        keypad = Keypad(got.append, pause=10)
        for key in "4", "2", "#":
            assert keypad.press(key)
        return got

    assert asyncio.run(run()) == [as_text("42#")]


def test_a_pause_delivers_the_keys_so_far():
    async def run() -> list[str]:
        got: list[str] = []
        keypad = Keypad(got.append, pause=0.05)
        keypad.press("1")
        keypad.press("*")
        await asyncio.sleep(0.2)
        keypad.press("9")
        await asyncio.sleep(0.2)
        return got

    assert asyncio.run(run()) == [as_text("1*"), as_text("9")]


def test_anything_but_a_dtmf_key_is_refused():
    async def run() -> tuple[list[bool], list[str]]:
        got: list[str] = []
        keypad = Keypad(got.append, pause=0.01)
        pressed = [keypad.press(k) for k in ("E", "12", "", "x")]
        await asyncio.sleep(0.05)
        return pressed, got

    assert asyncio.run(run()) == ([False, False, False, False], [])
    assert "4 2 #" in as_text("42#")
