"""Breaker table refresh at 300 / 10,000 / 20,000 locations (issue 13: ≤ 10 ms at any size).

    .venv/bin/python benchmarks/breakers_table.py [N ...]

Headless at 80×24, every row in the table (no cap). A refresh is what the Breakers screen does
with a new poll: `BreakerTable.show` (the filter / sort kept up to date and the changed screen
lines marked) and then drawing the marked lines (`render_lines` over the widget, what the
compositor asks of it for a frame). Figures, median and max of 7 rounds:

  first fill     an empty table given the whole snapshot (sorted once)
  1% changed     a new snapshot with 1 % of the breakers changed (state and failures)
  nothing        a new snapshot equal to the last one (a new tuple of equal rows)
  end key        the cursor to the last row (End), the table scrolled there
  new sort / filter   a user's key: the whole list re-sorted / re-filtered (informative)

"its CPU" is the thread's CPU time for update+draw (what other processes on a loaded machine
do not inflate). "frame" adds Textual's own wait for the next frame (pilot.pause: harness included), the figure
the previous DataTable version of this benchmark printed as "diff+paint".
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from textual.app import App, ComposeResult

from controlroom.live.sources import BreakerRow
from controlroom.widgets.breaker_table import BreakerTable

GOAL_MS = 10.0
ROUNDS = 7


def fleet(n: int, now: datetime | None = None) -> list[BreakerRow]:
    rng = random.Random(7)
    now = now or datetime.now(timezone.utc)
    rows = []
    for i in range(n):
        state = rng.choices(["closed", "open", "half_open"], [0.97, 0.02, 0.01])[0]
        rows.append(BreakerRow(f"loc-{i:05d}", f"Location {i}", rng.choice(["fudo", "maxirest", "bistrsoft"]), state,
                               rng.randint(0, 15), 10, 15, now - timedelta(minutes=rng.randint(1, 9000)),
                               now if state != "closed" else None))
    return rows


def one_percent_changed(rows: list[BreakerRow], rng: random.Random) -> list[BreakerRow]:
    changed = list(rows)
    for i in rng.sample(range(len(rows)), max(1, len(rows) // 100)):
        row = changed[i]
        changed[i] = row._replace(failure_count=(row.failure_count or 0) + 1,
                                  state="open" if row.state == "closed" else "closed")
    return changed


class Bench(App[None]):
    def compose(self) -> ComposeResult:
        yield BreakerTable()


async def measure(n: int) -> dict[str, list[tuple[float, float, float, float, int]]]:
    """name -> rounds of (update ms, update+draw ms, its CPU ms, frame ms, lines repainted)."""
    figures: dict[str, list[tuple[float, float, float, float, int]]] = {}
    now = datetime.now(timezone.utc)
    rng = random.Random(1)
    for _ in range(ROUNDS):
        app = Bench()
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.query_one(BreakerTable)
            await pilot.pause()
            rows = fleet(n, now)

            async def timed(name: str, act: Callable[[], Any]) -> None:
                began, cpu = time.perf_counter(), time.thread_time()
                shown = act()
                updated = time.perf_counter()
                table.render_lines(table.size.region)  # draws only the lines marked dirty
                drawn, cpu = time.perf_counter(), time.thread_time() - cpu
                await pilot.pause()
                framed = time.perf_counter()
                lines = shown.repainted if shown is not None else -1
                figures.setdefault(name, []).append(((updated - began) * 1000, (drawn - began) * 1000, cpu * 1000,
                                                     (framed - began) * 1000, lines))

            await timed("first fill", lambda: table.show(tuple(rows), now))
            rows = one_percent_changed(rows, rng)
            await timed("1% changed", lambda: table.show(tuple(rows), now))
            await timed("nothing changed", lambda: table.show(tuple(list(rows)), now))
            await timed("end key", lambda: table.action_last())
            assert table.cursor_row == n - 1
            await timed("new sort (key s)", lambda: table.show(tuple(rows), now, sort="location"))
            await timed("filter typed (/ 9)", lambda: table.show(tuple(rows), now, sort="location", filter_text="9"))
    return figures


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [300, 10_000, 20_000]
    print(f"Breaker table refresh, headless 80×24, every row listed; median (max) of {ROUNDS} rounds; "
          f"goal ≤ {GOAL_MS:.0f} ms for a poll's refresh (update+draw; judged on the median)")
    for n in sizes:
        figures = asyncio.run(measure(n))
        print(f"\n{n:,} locations:")
        print(f"  {'':<20} {'update':>15}    {'update+draw':>15}    {'(its CPU)':>15}    {'frame':>15}  lines  goal")
        for name, rounds in figures.items():
            columns = []
            for index in range(4):
                values = [r[index] for r in rounds]
                columns.append(f"{statistics.median(values):6.1f} ({max(values):5.1f})")
            lines = statistics.median(r[4] for r in rounds)
            draw_median = statistics.median(r[1] for r in rounds)
            poll = name in ("1% changed", "nothing changed")  # a poll's refresh; the rest once or per key
            verdict = ("ok" if draw_median <= GOAL_MS else "OVER") if poll else "—"
            print(f"  {name:<20} " + " ms ".join(f"{column:>15}" for column in columns) + f" ms {lines:>5.0f}  {verdict}")


if __name__ == "__main__":
    main()
