"""The performance budgets of DESIGN.md §6, measured against a real sandbox. Prints figures;
asserts nothing (a loaded machine should not fail a build, it should show in the numbers).

    .venv/bin/python benchmarks/budgets.py [--locations 10000] [--presses 200]

1. First frame of the control room (sandbox data loaded) vs a bare Textual app, same run.
2. One poll cycle over N >= 20 sources vs the slowest source alone.
3. Key press to screen update (p50 / p99) while 20 sources poll at 1 Hz and the breaker
   table holds the fleet.
4. Memory (RSS) of the control room process with the fleet loaded, and its CPU use while
   idle (nothing changing: the simulator is off).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from textual.app import App
from textual.widgets import Static

from controlroom.live.polling import Poller
from controlroom.config.loader import load_config
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app


class BareApp(App[None]):
    BINDINGS = [("x", "noop", "x")]

    def compose(self):  # noqa: ANN201
        yield Static("bare")

    def action_noop(self) -> None:
        pass


async def harness_latency(presses: int) -> list[float]:
    """press + pause on a bare app: what the pilot harness itself costs per key."""
    latencies = []
    async with BareApp().run_test(size=(80, 24)) as pilot:
        for _ in range(presses):
            began = time.perf_counter()
            await pilot.press("x")
            await pilot.pause()
            latencies.append(time.perf_counter() - began)
    return latencies


async def first_frame(make: object, size: tuple[int, int] = (80, 24)) -> float:
    """Seconds from constructing the app to its first refresh."""
    began = time.perf_counter()
    app = make()  # type: ignore[operator]
    seen: list[float] = []
    async with app.run_test(size=size) as pilot:
        app.call_after_refresh(lambda: seen.append(time.perf_counter()))
        while not seen:
            await pilot.pause(0.005)
    return seen[0] - began


async def poll_cycle(sandbox_config: Path, sources: int, *, kinds: str = "all") -> tuple[float, float]:
    """One cycle of `sources` pollers (the runbook's sources, repeated) vs the slowest alone.
    kinds="http": only the Prometheus (HTTP) sources, which wait on I/O."""
    from controlroom.live.sources import Feeds, PrometheusKpiSource

    loaded = load_config(sandbox_config)
    feeds = Feeds(loaded)
    try:
        fetchers = [source for source in feeds.kpis.values() if source is not None]
        fetchers += [source for source in (feeds.breakers, feeds.health) if source is not None]
        if kinds == "http":
            fetchers = [source for source in fetchers if isinstance(source, PrometheusKpiSource)]
        chosen = [fetchers[i % len(fetchers)] for i in range(sources)]
        pollers = [Poller(f"s{i}", source.fetch, interval_s=1.0, timeout_s=5.0) for i, source in enumerate(chosen)]
        cycles, slowest = [], []
        for _ in range(5):
            singles = []
            for poller in pollers:
                began = time.perf_counter()
                await poller.poll_once()
                singles.append(time.perf_counter() - began)
            slowest.append(max(singles))
            began = time.perf_counter()
            await asyncio.gather(*(poller.poll_once() for poller in pollers))
            cycles.append(time.perf_counter() - began)
        return statistics.median(cycles), statistics.median(slowest)
    finally:
        await feeds.close()


async def key_latency(sandbox_config: Path, presses: int) -> list[float]:
    loaded = load_config(sandbox_config)
    with tempfile.TemporaryDirectory() as journals:
        app = make_app(loaded, journal_dir=Path(journals), offer_resume=False, check_on_start=False)
        latencies: list[float] = []
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("b")
            await pilot.pause(2.0)  # the breaker table fills
            keys = ["down", "down", "up", "pagedown", "pageup", "k", "b", "p", "b"]
            for i in range(presses):
                began = time.perf_counter()
                await pilot.press(keys[i % len(keys)])
                await pilot.pause()  # until the screen has processed and refreshed
                latencies.append(time.perf_counter() - began)
        return latencies


async def memory_and_idle_cpu(sandbox_config: Path, idle_s: float) -> tuple[float, float]:
    loaded = load_config(sandbox_config)
    me = psutil.Process(os.getpid())
    with tempfile.TemporaryDirectory() as journals:
        app = make_app(loaded, journal_dir=Path(journals), offer_resume=False, check_on_start=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("b")
            await pilot.pause(3.0)
            rss = me.memory_info().rss / 2**20
            before = me.cpu_times()
            await asyncio.sleep(idle_s)
            after = me.cpu_times()
    cpu = (after.user - before.user + after.system - before.system) / idle_s * 100
    return rss, cpu


async def main(locations: int, presses: int) -> None:
    bare = statistics.median([await first_frame(BareApp) for _ in range(3)])
    async with Sandbox("healthy", locations=locations, simulate=False) as sandbox:
        loaded = load_config(sandbox.config_path)
        with tempfile.TemporaryDirectory() as journals:
            control = statistics.median([
                await first_frame(lambda: make_app(loaded, journal_dir=Path(journals), offer_resume=False))
                for _ in range(3)
            ])
        print(f"first frame: control room {control * 1000:.0f} ms, bare Textual app {bare * 1000:.0f} ms "
              f"(ratio {control / bare:.2f}, budget 1.5)")

        for kinds, label in (("http", "20 HTTP (Prometheus) sources"), ("all", "20 of the runbook's sources (SQL incl. the fleet-sized breaker query, and HTTP)")):
            cycle, slowest = await poll_cycle(sandbox.config_path, 20, kinds=kinds)
            print(f"poll cycle over {label}: {cycle * 1000:.0f} ms, slowest source alone {slowest * 1000:.0f} ms "
                  f"(medians of 5; ratio {cycle / slowest:.2f}, budget 1.2)")

        def percentiles(values: list[float]) -> tuple[float, float]:
            values = sorted(values)
            return values[len(values) // 2] * 1000, values[min(len(values) - 1, int(len(values) * 0.99))] * 1000

        p50, p99 = percentiles(await key_latency(sandbox.config_path, presses))
        h50, h99 = percentiles(await harness_latency(presses))
        print(f"key press to screen update over {presses} presses (moves and screen switches) at {locations} "
              f"breakers: p50 {p50:.1f} ms, p99 {p99:.1f} ms, measured through Textual's pilot, which costs "
              f"p50 {h50:.1f} / p99 {h99:.1f} ms per key on a bare app; the app's own share is about "
              f"p50 {p50 - h50:.1f} / p99 {p99 - h99:.1f} ms (budget p99 < 50 ms)")

        rss, cpu = await memory_and_idle_cpu(sandbox.config_path, idle_s=10.0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"memory at {locations} locations: RSS {rss:.0f} MB (peak {peak:.0f} MB; budget < 150 MB); "
              f"idle CPU {cpu:.1f} % of one core over 10 s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", type=int, default=10_000)
    parser.add_argument("--presses", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.locations, args.presses))
