"""Key press → the frame that shows its result, read from the app's own frames.

    .venv/bin/python benchmarks/key_frames.py [--locations 10000] [--keys 200] [--poll-scale 0.2]

Every frame the app's compositor hands to its driver (`App._display` with an update and no
batch open) is timestamped inside the app. For each key the latency is the time from just
before the key is dispatched to the first frame after its effect: for a screen switch, the
first frame once the new screen is on top; for a move, the first frame once the table's cursor
moved. The runbook's pollers run meanwhile (`--poll-scale 0.2`: the 5-s KPIs at 1 Hz) against a
healthy sandbox of `--locations` locations. Prints p50 / p90 / p99 for switches and for moves
(DESIGN.md §6: p99 ≤ 33 ms). The headless driver writes nothing to a terminal: the figures are
the app's work up to the frame, not the terminal's drawing of it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from textual.widgets import DataTable

from controlroom.config.loader import load_config
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.widgets.breaker_table import BreakerTable

SWITCHES = ["b", "k", "p", "R", "d", "c"]


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000

    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p90 {at(0.9):.1f} ms, p99 {at(0.99):.1f} ms"


async def measure(config: Path, keys: int, poll_scale: float) -> tuple[list[float], list[float]]:
    loaded = load_config(config)
    with tempfile.TemporaryDirectory() as journals:
        app = make_app(loaded, journal_dir=Path(journals), offer_resume=False, check_on_start=False,
                       poll_scale=poll_scale)
        frames: list[float] = []
        async with app.run_test(size=(80, 24)) as pilot:
            display = app._display

            def timed_display(screen: Any, renderable: Any) -> None:
                if renderable is not None and not app._batch_count:
                    frames.append(time.perf_counter())
                display(screen, renderable)

            app._display = timed_display  # type: ignore[method-assign]
            for key in SWITCHES:  # every view visited once: first visits are not what is measured
                await pilot.press(key)
                await pilot.pause(0.3)
            await pilot.pause(2.0)
            switches: list[float] = []
            moves: list[float] = []
            slowest: list[tuple[float, str]] = []
            for index in range(keys):
                if index % 2 == 0:
                    key = SWITCHES[(index // 2) % len(SWITCHES)]
                    before = app.screen
                    seen = len(frames)
                    began = time.perf_counter()
                    await pilot.press(key)
                    switches.append(await first_frame_after(frames, seen, lambda: app.screen is not before) - began)
                    slowest.append((switches[-1], f"{type(before).__name__} → {key}"))
                else:
                    tables = list(app.screen.query(DataTable)) + list(app.screen.query(BreakerTable))
                    if not tables:
                        continue
                    table = tables[0]
                    was = table.cursor_row
                    key = "down" if table.cursor_row < max(0, table.row_count - 2) else "up"
                    seen = len(frames)
                    began = time.perf_counter()
                    await pilot.press(key)
                    if table.cursor_row == was:
                        continue  # nothing to move to
                    moves.append(await first_frame_after(frames, seen, lambda: True) - began)
            worst = sorted(slowest, reverse=True)[:5]
            print("slowest switches: " + ", ".join(f"{what} {seconds * 1000:.0f} ms" for seconds, what in worst))
            return switches, moves


async def first_frame_after(frames: list[float], seen: int, shown: Any, timeout_s: float = 2.0) -> float:
    """The time of the first frame after `seen` frames once `shown()` holds."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if shown() and len(frames) > seen:
            return frames[seen]
        await asyncio.sleep(0.0005)
    return deadline


async def main(locations: int, keys: int, poll_scale: float) -> None:
    async with Sandbox("healthy", locations=locations, simulate=False) as sandbox:
        switches, moves = await measure(sandbox.config_path, keys, poll_scale)
    print(f"key → frame at {locations} locations, pollers at {1 / poll_scale:g}× speed, 80×24:")
    print(f"  screen switches ({len(switches)}): {percentiles(switches)}   (goal p99 ≤ 33 ms)")
    print(f"  moves in a table ({len(moves)}): {percentiles(moves)}   (goal p99 ≤ 33 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--poll-scale", type=float, default=0.2)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.locations, arguments.keys, arguments.poll_scale))
