"""Helpers for driving the app with Textual's pilot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def wait_for(predicate: Callable[[], bool], pilot: Any, timeout: float = 15.0, what: str = "condition") -> None:
    """Let the app run until `predicate()` holds; fail after `timeout` seconds, naming `what`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"{what}: not met in time"
        await pilot.pause(0.02)


def notifications(app: Any) -> list[str]:
    """The messages of the notifications on show, oldest first."""
    return [str(n.message) for n in app._notifications]
