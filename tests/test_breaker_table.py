"""The breaker table lists every location (no cap): at 10,000 locations, against the real
sandbox, the last row of the sorted list is reachable with End and drawn on screen; sort and
filter still work; the cursor stays on its location when a poll re-orders the list. And the
incremental order the table keeps always equals sorting the whole snapshot again."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from controlroom.config.loader import load_config
from controlroom.live.sources import BreakerRow, BreakerSnapshot
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.breakers import BreakersScreen
from controlroom.widgets.breaker_table import SORTS, BreakerTable, Listing, select
from pilot_support import wait_for
from snapshot_support import capture

LOCATIONS = 10_000
pytestmark = pytest.mark.timeout(300)


def fleet(n: int, rng: random.Random) -> list[BreakerRow]:
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return [BreakerRow(f"loc-{i:05d}", f"Place {rng.randint(0, n // 3)}", rng.choice(["fudo", "maxirest", ""]),
                       rng.choice(["closed"] * 8 + ["open", "half_open"]), rng.choice([None, *range(12)]), 10, 15,
                       rng.choice([None, now - timedelta(minutes=rng.randint(1, 9000))]),
                       rng.choice([None, now])) for i in range(n)]


def test_the_kept_order_is_the_whole_sort_after_any_series_of_polls_filters_and_sorts() -> None:
    rng = random.Random(3)
    rows = fleet(1500, rng)
    listing = Listing()
    for step in range(250):
        rows = list(rows)
        for i in rng.sample(range(len(rows)), rng.choice([0, 1, 15, 500])):
            rows[i] = rows[i]._replace(state=rng.choice(["open", "closed", "half_open"]), failure_count=rng.randint(0, 15))
        if rng.random() < 0.2:  # the query's order moves a little (a page's updated rows)
            at = rng.randrange(len(rows))
            rows[at:at + 40] = rng.sample(rows[at:at + 40], len(rows[at:at + 40]))
        if rng.random() < 0.05:
            rng.shuffle(rows)
        if rng.random() < 0.05:
            rows.pop(rng.randrange(len(rows)))
        if rng.random() < 0.05:
            rows.append(rows[0]._replace(failure_count=99))  # the same location twice: the last row wins
        snapshot = tuple(rows)
        needle, sort = rng.choice(["", "", "place 1", "loc-01", "open", "fudo"]), rng.choice(SORTS)
        for text in (needle, needle + "2"):  # a filter, then typing on
            listing.update(snapshot, filter_text=text, sort=sort)
            latest = tuple({row.location_id: row for row in snapshot}.values())
            expected = select(latest, filter_text=text, sort=sort)
            assert [listing.row_at(i) for i in range(len(listing))] == list(expected.rows), (step, text, sort)
            assert listing.total == len(snapshot)


def test_select_lists_every_row_unless_asked_for_a_cap() -> None:
    rows = tuple(fleet(900, random.Random(5)))
    assert len(select(rows).rows) == 900
    capped = select(rows, max_rows=10)
    assert capped.rows == select(rows).rows[:10] and capped.matched == 900 and capped.total == 900


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("breaker-open", locations=LOCATIONS, simulate=False) as running:
        yield running


def screen_text(app) -> str:
    return capture(app).text


async def test_every_one_of_10000_rows_is_reachable_sorted_and_filtered(sandbox: Sandbox, tmp_path: Path) -> None:
    app = make_app(load_config(sandbox.config_path), journal_dir=tmp_path, check_on_start=False, poll_scale=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("b")
        screen = app.screen
        assert isinstance(screen, BreakersScreen)
        table = screen.query_one(BreakerTable)
        await wait_for(lambda: table.row_count == LOCATIONS, pilot, timeout=30, what="all 10,000 rows")
        assert isinstance(screen.snapshot, BreakerSnapshot)
        assert f"{LOCATIONS:,} of {LOCATIONS:,} · sort state" in screen_text(app)

        # End: the last row of the sorted list is on screen, under the cursor.
        ordered = select(screen.snapshot.rows).rows
        await pilot.press("end")
        await pilot.pause()
        assert table.cursor_row == LOCATIONS - 1 and table.cursor_id == ordered[-1].location_id
        last_name = ordered[-1].location_name[:20]
        assert last_name in table.visible_text()[-1]
        assert last_name in screen_text(app)
        await pilot.press("home")
        await pilot.pause()
        assert table.cursor_row == 0 and ordered[0].location_name[:20] in screen_text(app)

        # Sort: s cycles to "failures", then "since": the order is the whole list's sort.
        await pilot.press("s", "s")
        await wait_for(lambda: screen.sort_by == "since", pilot)
        snapshot_rows = screen.snapshot.rows
        assert table.shown_ids == [row.location_id for row in select(snapshot_rows, sort="since").rows]

        # Filter: / and text; the status says how many match of how many.
        needle = ordered[LOCATIONS // 2].location_id[-3:]  # in some ids and names, not all
        await pilot.press("end", "slash", *needle, "enter")  # filtered from the bottom of the list
        expected = select(screen.snapshot.rows, filter_text=needle, sort="since")
        await wait_for(lambda: table.row_count == expected.matched, pilot, what="the filtered rows")
        assert 0 < expected.matched < LOCATIONS
        assert table.shown_ids == [row.location_id for row in expected.rows]
        await pilot.pause()
        assert expected.rows[-1].location_name[:20] in screen_text(app)  # the view followed the shorter list
        assert f"{expected.matched:,} matching of {LOCATIONS:,}" in screen_text(app)
        assert "matching of" in screen_text(app) and f"of {expected.matched:,} matching" not in screen_text(app)
        await pilot.press("escape")
        await wait_for(lambda: table.row_count == LOCATIONS, pilot, what="the filter cleared")
        await pilot.press("q")


async def test_the_cursor_stays_on_its_location_when_a_poll_reorders_the_list(sandbox: Sandbox, tmp_path: Path) -> None:
    app = make_app(load_config(sandbox.config_path), journal_dir=tmp_path, check_on_start=False, poll_scale=0.1)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("b")
        screen = app.screen
        table = screen.query_one(BreakerTable)
        await wait_for(lambda: table.row_count == LOCATIONS, pilot, timeout=30, what="all 10,000 rows")
        await pilot.press(*["down"] * 8)
        chosen, index = table.cursor_id, table.cursor_row
        assert index == 8 and chosen is not None
        ordered = select(screen.snapshot.rows).rows
        assert ordered[8].location_id == chosen
        # A closed breaker far below opens: it sorts to the top, above the cursor's row.
        moving = next(row for row in reversed(ordered) if row.state == "closed")
        conn = await asyncpg.connect(sandbox.dsn)
        try:
            await conn.execute("UPDATE rotation_cb SET state = 'open', failure_count = 99, opened_at = now(), "
                               "changed_at = now() WHERE location_id = $1", moving.location_id)
            before = screen.snapshot
            await wait_for(lambda: screen.snapshot is not before and any(
                row.location_id == moving.location_id and row.state == "open" for row in screen.snapshot.rows),
                pilot, timeout=10, what="the next poll")
            assert table.shown_ids[0] == moving.location_id
            assert table.cursor_id == chosen and table.cursor_row == index + 1
            await pilot.pause()
            assert moving.location_name[:20] in screen_text(app)  # a poll does not scroll the table
        finally:
            await conn.execute("UPDATE rotation_cb SET state = 'closed', failure_count = $2, opened_at = NULL "
                               "WHERE location_id = $1", moving.location_id, moving.failure_count or 0)
            await conn.close()
        await pilot.press("q")
