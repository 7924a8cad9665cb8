"""Pollers: backoff, no overlap, stale marking — with an injected clock, no real waiting."""

from __future__ import annotations

import asyncio

import pytest

from controlroom.live.polling import Poller, format_age
from controlroom.config.models import Kpi
from controlroom.live.sources import kpi_colour, plain


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_success_then_failures_back_off_and_keep_last_value() -> None:
    clock = FakeClock()
    results: list[object] = [1, RuntimeError("db down"), RuntimeError("db down"), RuntimeError("still"), 2]

    async def fetch() -> int:
        item = results.pop(0)
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    poller = Poller("x", fetch, interval_s=5, timeout_s=1, max_backoff_s=30, clock=clock)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        clock.now += delay

    states = []
    await poller.run(states.append, sleep=sleep, max_polls=5)
    assert [s.value for s in states] == [1, 1, 1, 1, 2]
    assert [s.failures for s in states] == [0, 1, 2, 3, 0]
    assert delays == [5, 10, 20, 30]  # doubled, capped at max_backoff_s
    assert states[1].error == "RuntimeError: db down" and states[1].stale(clock.now)
    assert states[3].age(states[3].error_at) == 35  # the last good value, 5+10+20 s old
    assert states[4].error is None and not states[4].stale(states[4].value_at)


async def test_stale_when_too_old_even_without_error() -> None:
    clock = FakeClock()

    async def fetch() -> str:
        return "ok"

    poller = Poller("x", fetch, interval_s=10, timeout_s=1, clock=clock)
    state = await poller.poll_once()
    assert not state.stale(clock.now + 20)
    assert state.stale(clock.now + 26)
    assert format_age(state.age(clock.now + 125)) == "2m"


async def test_polls_never_overlap() -> None:
    running = 0
    peak = 0
    calls = 0

    async def fetch() -> int:
        nonlocal running, peak, calls
        running += 1
        calls += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return calls

    poller = Poller("x", fetch, interval_s=0.001, timeout_s=1)
    await asyncio.gather(*(poller.poll_once() for _ in range(5)))
    assert peak == 1 and calls == 1  # concurrent callers get the current state
    await poller.run(lambda s: None, max_polls=3)
    assert peak == 1 and calls == 4


async def test_timeout_is_an_error_and_redacted() -> None:
    async def slow() -> int:
        await asyncio.sleep(1)
        return 1

    async def leaky() -> int:
        raise RuntimeError("password=hunter22 rejected")

    state = await Poller("x", slow, interval_s=1, timeout_s=0.01).poll_once()
    assert state.error == "timed out after 0.01 s" and state.failures == 1
    state = await Poller("y", leaky, interval_s=1, timeout_s=1, redact=lambda s: s.replace("hunter22", "[redacted]")).poll_once()
    assert "hunter22" not in (state.error or "")


def test_wake_shortens_the_wait() -> None:
    async def main() -> float:
        async def fetch() -> int:
            return 1

        poller = Poller("x", fetch, interval_s=60, timeout_s=1)
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(poller.run(lambda s: None, max_polls=2))
        await asyncio.sleep(0.01)
        began = loop.time()
        poller.wake()
        await asyncio.wait_for(task, 1)
        return loop.time() - began

    assert asyncio.run(main()) < 0.5


KPI = Kpi.model_validate({
    "id": "rot", "title": "Rotation", "window": "realtime", "unit": "%",
    "green": {"op": ">", "value": 98}, "red": {"op": "<", "value": 95},
    "source": {"kind": "sql", "query": "SELECT 1"},
})


@pytest.mark.parametrize(("value", "colour"), [(99.0, "green"), (98.0, "amber"), (95.0, "amber"), (94.9, "red"),
                                               (None, "unknown"), (float("nan"), "unknown")])
def test_kpi_colour(value: float | None, colour: str) -> None:
    assert kpi_colour(KPI, value) == colour


def test_plain_makes_escapes_visible() -> None:
    assert plain("a\x1b[31mb\x07\nc") == "a\\x1b[31mb\\x07 c"
    assert plain("[red]x[/red]") == "[red]x[/red]"


def test_pollers_of_one_interval_wake_together_on_its_grid() -> None:
    """The 10-s pollers wake at the same moments whatever their polls took, so their news is
    one frame and their SQL one round trip; a 30-s poller wakes with them every third time."""
    async def fetch() -> int:
        return 1

    ten, also_ten, thirty = (Poller(name, fetch, interval_s=interval, timeout_s=1)
                             for name, interval in (("a", 10), ("b", 10), ("c", 30)))
    assert 1001 + ten.next_wait(1001.0) == 1010 == 1003.5 + also_ten.next_wait(1003.5)
    assert 1001 + thirty.next_wait(1001.0) == 1020  # a multiple of 10 as well
    assert 1006 + ten.next_wait(1006.0) == 1020  # a poll that took over half the interval skips a slot


async def test_a_running_poller_sleeps_to_the_next_slot_of_its_grid() -> None:
    clock = FakeClock()
    clock.now = 1003.0

    async def fetch() -> int:
        clock.now += 0.5  # the poll takes half a second
        return 1

    poller = Poller("x", fetch, interval_s=10, timeout_s=1, clock=clock)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        clock.now += delay

    await poller.run(lambda state: None, sleep=sleep, max_polls=3)
    assert delays == [6.5, 9.5]  # to 1010, then 1020: on the grid, not 10 s after each poll ended
