"""How long the sandbox takes to start and stop, by fleet size. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/sandbox_startup.py [--runs 3] [--locations 300 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from controlroom.sandbox.runner import Sandbox


async def measure(locations: int, runs: int) -> None:
    starts, stops, parts = [], [], []
    for _ in range(runs):
        sandbox = Sandbox("healthy", locations=locations, simulate=False)
        began = time.perf_counter()
        await sandbox.start()
        starts.append(time.perf_counter() - began)
        parts.append(sandbox.timings)
        began = time.perf_counter()
        await sandbox.stop()
        stops.append(time.perf_counter() - began)
    med = statistics.median
    print(
        f"{locations:>6} locations: start {med(starts):.2f} s (postgres {med(p.postgres_s for p in parts):.2f}, "
        f"schema+seed {med(p.seed_s for p in parts):.2f}, http {med(p.http_s for p in parts):.2f}), "
        f"stop {med(stops):.2f} s  [median of {runs}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--locations", type=int, nargs="+", default=[300, 10_000])
    args = parser.parse_args()
    for locations in args.locations:
        asyncio.run(measure(locations, args.runs))


if __name__ == "__main__":
    main()
