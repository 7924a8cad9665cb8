"""Poll only what is shown, repaint only what changed.

The breakers are read whole only while the Breakers view shows them: off screen the poller
asks the database for counts per provider and state (what the watch after a deployment needs),
and switching to the view brings the full list at once, not at the next interval. And a poll
that brings nothing new costs no frame on any view."""

from __future__ import annotations

import copy
import gc
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from controlroom.config.loader import load_config
from controlroom.live.polling import PollState
from controlroom.live.sources import BreakerCounts, BreakerSnapshot
from controlroom.release.watch import open_breakers
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.breakers import BreakersScreen
from controlroom.widgets.messages import Polled
from pilot_support import wait_for

pytestmark = pytest.mark.timeout(120)
LOCATIONS = 120
VIEW_KEYS = ("c", "d", "k", "b", "p", "R")


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("breaker-open", locations=LOCATIONS, simulate=False) as running:
        yield running


async def test_an_off_screen_breaker_view_gets_counts_and_its_rows_come_when_it_is_shown(
        sandbox: Sandbox, tmp_path: Path) -> None:
    app = make_app(load_config(sandbox.config_path), journal_dir=tmp_path, check_on_start=False, poll_scale=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        breakers = lambda: app.poll_states.get("breakers")  # noqa: E731
        await wait_for(lambda: breakers() is not None and breakers().value is not None, pilot, what="a breaker poll")
        counts = breakers().value
        assert isinstance(counts, BreakerCounts)  # the checklist is on show: no full list
        assert sum(sum(states.values()) for states in counts.by_provider.values()) == LOCATIONS
        assert open_breakers(counts) == {"maxirest": 4}  # what the watch reads, from the counts alone

        await pilot.press("b")
        await wait_for(lambda: isinstance(breakers().value, BreakerSnapshot), pilot, timeout=3, what="the full list")
        snapshot = breakers().value
        assert len(snapshot.rows) == LOCATIONS and open_breakers(snapshot) == open_breakers(counts)
        screen = app.screen
        assert isinstance(screen, BreakersScreen) and screen.snapshot is snapshot

        await pilot.press("c")
        await wait_for(lambda: isinstance(breakers().value, BreakerCounts), pilot, timeout=3, what="counts again")
        assert screen.snapshot is snapshot  # the view kept its rows; the counts are not rows


def count_frames(app: Any) -> list[float]:
    """Every frame the compositor hands the driver from now on (a batch's inner updates are
    not frames: they are drawn once, when the batch closes)."""
    frames: list[float] = []
    display = app._display

    def counted(screen: Any, renderable: Any) -> None:
        if renderable is not None and not app._batch_count:
            frames.append(time.perf_counter())
        display(screen, renderable)

    app._display = counted
    return frames


def polled_again(state: PollState[Any]) -> PollState[Any]:
    """What a poll that found nothing new delivers: a new state holding an equal, new value."""
    return replace(state, value=copy.copy(state.value), polls=state.polls + 1)


async def test_a_poll_that_changes_nothing_visible_causes_no_repaint(sandbox: Sandbox, tmp_path: Path) -> None:
    # The clocks stand still, so ages do not move: a frame now could only come from a poll.
    moment = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)
    app = make_app(load_config(sandbox.config_path), journal_dir=tmp_path, check_on_start=False, poll_scale=0.05,
                   clock=lambda: 1000.0, now=lambda: moment)
    async with app.run_test(size=(80, 24)) as pilot:
        for key in VIEW_KEYS:  # every view shown once, each with its data
            await pilot.press(key)
            await wait_for(lambda: len(app.poll_states) == len(app.pollers)
                           and all(state.value is not None for state in app.poll_states.values()), pilot,
                           what="every source polled")
        app.workers.cancel_group(app, "pollers")
        await wait_for(lambda: not any(poller.running for poller in app.pollers.values()), pilot, what="pollers stopped")
        frames = count_frames(app)
        for key in VIEW_KEYS:
            await pilot.press(key)
            await pilot.pause(0.3)
            shown = len(frames)
            for source, state in list(app.poll_states.items()):
                app.post_message(Polled(source, polled_again(state)))
            await pilot.pause(0.3)
            assert len(frames) == shown, f"{type(app.screen).__name__}: a poll with nothing new repainted"

        # The same delivery with a value that shows differently is a frame: the count is live.
        await pilot.press("k")
        await pilot.pause(0.3)
        shown = len(frames)
        source = next(name for name in app.poll_states if name.startswith("kpi:"))
        state = app.poll_states[source]
        changed = replace(state.value, value=(state.value.value or 0) + 1234.5, read_at=state.value.read_at + 1)
        app.post_message(Polled(source, replace(state, value=changed, polls=state.polls + 1)))
        await pilot.pause(0.3)
        assert len(frames) > shown


async def test_a_view_off_show_keeps_no_old_breaker_list_alive(sandbox: Sandbox, tmp_path: Path) -> None:
    app = make_app(load_config(sandbox.config_path), journal_dir=tmp_path, check_on_start=False, poll_scale=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        breakers = lambda: app.poll_states.get("breakers")  # noqa: E731
        await pilot.press("b")
        await wait_for(lambda: breakers() is not None and isinstance(breakers().value, BreakerSnapshot), pilot,
                       what="the full list")
        await pilot.press("k")  # the KPI view is handed the states as they are, the full list among them
        first = weakref.ref(breakers().value)
        await wait_for(lambda: isinstance(breakers().value, BreakerCounts), pilot, what="counts again")
        # A breaker's failure count moves, so the next full read is a new list (an unchanged
        # one is not read again: the source answers with the list it has).
        conn = await asyncpg.connect(sandbox.dsn)
        try:
            await conn.execute("UPDATE rotation_cb SET failure_count = coalesce(failure_count, 0) + 1 "
                               "WHERE location_id = (SELECT min(location_id) FROM rotation_cb)")
        finally:
            await conn.close()
        await pilot.press("b")
        await wait_for(lambda: isinstance(breakers().value, BreakerSnapshot) and breakers().value is not first(),
                       pilot, what="a newer full list")
        await pilot.press("c")
        await wait_for(lambda: isinstance(breakers().value, BreakerCounts), pilot, what="counts again")
        gc.collect()
        assert first() is None  # only the Breakers view keeps a list: the one it renders


async def test_an_age_ticking_on_the_kpi_view_is_drawn_without_laying_the_view_out(
    sandbox: Sandbox, tmp_path: Path,
) -> None:
    """The KPI view's ages move every second: each tick writes 20 labels whose size their CSS
    fixes, so it repaints them and lays nothing out (a layout of the view was most of the cost
    of an idle KPI view)."""
    now = [1000.0]
    app = make_app(load_config(sandbox.config_path), journal_dir=tmp_path, check_on_start=False, poll_scale=0.05,
                   clock=lambda: now[0])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("k")
        await wait_for(lambda: all(state.value is not None for name, state in app.poll_states.items()
                                   if name.startswith("kpi:")), pilot, what="every KPI polled")
        app.workers.cancel_group(app, "pollers")
        await wait_for(lambda: not any(poller.running for poller in app.pollers.values()), pilot, what="pollers stopped")
        await pilot.pause(0.3)
        screen = app.screen
        layouts: list[float] = []
        lay_out = screen._refresh_layout

        def counted_layout(*args: Any, **kwargs: Any) -> None:
            layouts.append(time.perf_counter())
            lay_out(*args, **kwargs)

        screen._refresh_layout = counted_layout
        frames = count_frames(app)
        ages = [str(row._age.render()) for row in screen.kpi_rows().values()]
        now[0] += 7.0  # every age moves on
        app._tick()
        await pilot.pause(0.3)
        assert [str(row._age.render()) for row in screen.kpi_rows().values()] != ages
        assert frames and not layouts
