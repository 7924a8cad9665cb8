"""Breaker table refresh at 10,000 locations (DESIGN.md §6): prints figures.

    .venv/bin/python benchmarks/breakers_table.py [N]

Measures, headless at 80×24: the first fill, a refresh where 1 % of breakers changed, a
no-change refresh, and the same fill with the cap lifted (all N rows in the DataTable), which
shows why the screen caps at MAX_ROWS.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from textual.app import App, ComposeResult

from controlroom.screens.breakers import MAX_ROWS
from controlroom.live.sources import BreakerRow
from controlroom.widgets.breaker_table import BreakerTable, select


def fleet(n: int) -> list[BreakerRow]:
    rng = random.Random(7)
    now = datetime.now(timezone.utc)
    rows = []
    for i in range(n):
        state = rng.choices(["closed", "open", "half_open"], [0.97, 0.02, 0.01])[0]
        rows.append(BreakerRow(f"loc-{i:05d}", f"Location {i}", rng.choice(["fudo", "maxirest", "bistrsoft"]), state,
                               rng.randint(0, 15), 10, 15, now - timedelta(minutes=rng.randint(1, 9000)),
                               now if state != "closed" else None))
    return rows


class Bench(App[None]):
    def compose(self) -> ComposeResult:
        yield BreakerTable()


async def measure(n: int, cap: int) -> dict[str, float]:
    rows = fleet(n)
    app = Bench()
    figures: dict[str, float] = {}
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(BreakerTable)

        async def refresh(label: str, data: list[BreakerRow]) -> None:
            began = time.perf_counter()
            view = select(tuple(data), max_rows=cap)
            table.show(view.rows, datetime.now(timezone.utc))
            figures[label + " (diff)"] = time.perf_counter() - began
            await pilot.pause()  # let it paint
            figures[label + " (diff+paint)"] = time.perf_counter() - began

        await refresh("first fill", rows)
        rng = random.Random(1)
        changed = list(rows)
        for i in rng.sample(range(n), n // 100):
            changed[i] = replace(changed[i], failure_count=changed[i].failure_count + 1,
                                 state="open" if changed[i].state == "closed" else "closed")
        await refresh("1% changed", changed)
        await refresh("no change", changed)
    return figures


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    for cap, label in ((MAX_ROWS, f"capped at {MAX_ROWS} rows (the screen)"), (n, f"uncapped: all {n:,} rows")):
        figures = asyncio.run(measure(n, cap))
        print(f"{n:,} locations, {label}:")
        for name, seconds in figures.items():
            print(f"  {name:<28} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
