"""Pollers: one per source, each with its own interval, timeout and exponential backoff.

A poller never overlaps itself: the next poll is scheduled when the previous one finishes
(sleep *after* the fetch), so a slow source polls less often instead of piling up. It wakes
on its interval's grid (the multiples of the interval on the clock), so the pollers of one
interval wake together: one frame for their news instead of one each, and the SQL KPIs of a
database in one round trip (`controlroom.live.sql_batch`). It keeps
the last good snapshot, when it was taken, and the last error; a `PollState` is an
immutable picture of that, which is what the UI receives. Clocks are injectable. UI-free.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

T = TypeVar("T")

#: A snapshot older than this many intervals (or any error since it) is stale.
STALE_INTERVALS = 2.5


@dataclass(frozen=True)
class PollState(Generic[T]):
    name: str
    interval_s: float
    value: T | None = None  # the last good snapshot
    value_at: float | None = None  # monotonic time it was taken
    error: str | None = None  # the last error, cleared by the next success
    error_at: float | None = None
    failures: int = 0  # consecutive
    polls: int = 0
    last_duration_s: float | None = None

    def age(self, now: float) -> float | None:
        return None if self.value_at is None else max(0.0, now - self.value_at)

    def stale(self, now: float) -> bool:
        """No snapshot yet, the last poll failed, or the snapshot is too old."""
        if self.value_at is None or self.error is not None:
            return True
        return now - self.value_at > STALE_INTERVALS * self.interval_s


def format_age(seconds: float | None) -> str:
    """How old, in words that change only as often as it matters: under a minute in steps of
    5 s ("0s", "5s", … "55s"; an age redrawn every second is a repaint a second on every row
    that shows one, for a difference nobody acts on), then minutes, hours, days."""
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{int(max(0.0, seconds) // 5 * 5)}s"
    if seconds < 90:
        return "1m"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


def describe_error(error: BaseException, redact: Callable[[str], str] = lambda s: s, *,
                   timeout_s: float | None = None) -> str:
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        # The source's deadline ran out (connect, query or a body still arriving).
        return "timed out" if timeout_s is None else f"timed out after {timeout_s:g} s"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    name = type(error).__name__
    return redact(f"{name}: {text}" if text else name)[:300]


class Poller(Generic[T]):
    """Calls `fetch` every `interval_s` (at the interval's grid slots, the next one after the
    previous poll ended: `next_wait`), with a `timeout_s` per call; after n consecutive
    failures waits about interval·2ⁿ, at most `max_backoff_s`."""

    def __init__(
        self,
        name: str,
        fetch: Callable[[], Awaitable[T]],
        *,
        interval_s: float,
        timeout_s: float,
        max_backoff_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        redact: Callable[[str], str] = lambda s: s,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be positive")
        self.name = name
        self._fetch = fetch
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max(max_backoff_s, interval_s)
        self.clock = clock
        self._redact = redact
        self.state: PollState[T] = PollState(name, interval_s)
        self._running = False
        self._wake = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._running

    def next_delay(self) -> float:
        failures = self.state.failures
        if failures == 0:
            return self.interval_s
        return min(self.interval_s * (2 ** min(failures, 30)), self.max_backoff_s)

    def next_wait(self, now: float) -> float:
        """Seconds from `now` (a poll just finished) to the next poll: the first slot of the
        interval's grid at least `next_delay()` minus half an interval away. On time, that is
        the next slot; a poll that took over half the interval skips one; after failures the
        backoff still holds, to within half an interval."""
        earliest = now + self.next_delay() - self.interval_s / 2
        slot = math.ceil(earliest / self.interval_s) * self.interval_s
        return max(0.0, slot - now)

    async def poll_once(self) -> PollState[T]:
        """One poll. If one is already in flight, returns the current state without
        starting another (polls never overlap)."""
        if self._running:
            return self.state
        self._running = True
        started = self.clock()
        try:
            value = await asyncio.wait_for(self._fetch(), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - any failure of a source is data
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            now = self.clock()
            self.state = replace(
                self.state,
                error=describe_error(error, self._redact, timeout_s=self.timeout_s),
                error_at=now,
                failures=self.state.failures + 1,
                polls=self.state.polls + 1,
                last_duration_s=now - started,
            )
        else:
            now = self.clock()
            self.state = replace(
                self.state, value=value, value_at=now, error=None, error_at=None, failures=0,
                polls=self.state.polls + 1, last_duration_s=now - started,
            )
        finally:
            self._running = False
        return self.state

    def wake(self) -> None:
        """Poll now instead of waiting for the rest of the delay."""
        self._wake.set()

    async def _sleep(self, delay: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def run(
        self,
        deliver: Callable[[PollState[T]], object],
        *,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        max_polls: int | None = None,
    ) -> None:
        """Poll forever (or `max_polls` times), calling `deliver` with each new state."""
        sleep = sleep or self._sleep
        count = 0
        while max_polls is None or count < max_polls:
            deliver(await self.poll_once())
            count += 1
            if max_polls is not None and count >= max_polls:
                break
            await sleep(self.next_wait(self.clock()))
