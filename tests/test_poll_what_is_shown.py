"""The breakers are read whole only while the Breakers view shows them: off screen the poller
asks the database for counts per provider and state (what the watch after a deployment needs),
and switching to the view brings the full list at once, not at the next interval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlroom.config.loader import load_config
from controlroom.live.sources import BreakerCounts, BreakerSnapshot
from controlroom.release.watch import open_breakers
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.breakers import BreakersScreen
from pilot_support import wait_for

pytestmark = pytest.mark.timeout(120)
LOCATIONS = 120


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
