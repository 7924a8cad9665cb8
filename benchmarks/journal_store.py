"""Append throughput of the shared Postgres journal store with 1, 5 and 50 writer processes on
one release (issue 11). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/journal_store.py [--records 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time


from controlroom.release.pg_journal import PgJournal
from controlroom.sandbox.pg.postgres import EmbeddedPostgres


def _writer(dsn: str, release: str, worker: int, count: int, start: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    async def run() -> None:
        store = await PgJournal.open(dsn, operator={"user": f"w{worker}", "host": "bench"})
        try:
            start.wait()  # type: ignore[attr-defined]
            for n in range(count):
                await store.append(release, "tick", {"worker": worker, "n": n})
        finally:
            await store.close()
    asyncio.run(run())


async def _create(dsn: str, release: str) -> None:
    store = await PgJournal.open(dsn, operator={"user": "bench", "host": "bench"})
    try:
        await store.create_release(release, "bench", "1")
    finally:
        await store.close()


def measure(dsn: str, writers: int, records: int) -> float:
    release = f"bench-{writers}"
    asyncio.run(_create(dsn, release))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    per = records // writers
    procs = [ctx.Process(target=_writer, args=(dsn, release, w, per, start)) for w in range(writers)]
    for p in procs:
        p.start()
    time.sleep(2.0 + writers * 0.1)  # let every writer connect before the clock starts
    began = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - began
    return per * writers / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    with EmbeddedPostgres() as pg:
        for writers in (1, 5, 50):
            rate = measure(pg.dsn, writers, args.records)
            print(f"{writers:>2} writer(s): {rate:7.0f} appends/s ({args.records} records, one release)")


if __name__ == "__main__":
    main()
