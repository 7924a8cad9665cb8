"""Fan-out latency of the shared journal store (issue 11, DESIGN.md §6: p99 ≤ 200 ms with 5
watchers on loopback): from the driver's append, committed, to each watcher's screen having
drawn it. The driver is a release engine in this process; each watcher is the control room
app in a process of its own (headless driver, so the frame is composed but not written to a
terminal), on the default runbook, joined to the same release on an embedded Postgres.
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/shared_fanout.py [--watchers 5] [--records 200] [--gap-ms 20]

Each record is a checklist result whose evidence differs from the last, so every one changes a
row on the watchers' Checklist screen (a real re-render, not a no-op); it carries the
wall-clock time just before its append; a watcher stamps the time its screen has been
refreshed after taking the record in (same machine, same clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controlroom.config.loader import load_config
from controlroom.release.engine import ReleaseEngine
from controlroom.sandbox.pg.postgres import EmbeddedPostgres

CONFIG = """\
runbook = "default"
env_file = "bench.env"

[environment]
name = "fan-out bench"

[environment.urls]
supabase = "http://127.0.0.1:9"
metrics = "http://127.0.0.1:9"
pagerduty = "http://127.0.0.1:9"

[environment.secrets]
database_dsn = "BENCH_DSN"
supabase_api_key = "BENCH_KEY"
burst_api_key = "BENCH_KEY"
slack_webhook_url = "BENCH_KEY"
pagerduty_routing_key = "BENCH_KEY"

[journal]
store = "postgres"
"""

WATCHER = r"""
import asyncio, json, sys, time
from pathlib import Path
from controlroom.config.loader import load_config
from controlroom.screens.app import ControlRoomApp, make_app

config, journals, label, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
seen: dict[int, float] = {}
original = ControlRoomApp.session_changed

def session_changed(self):
    original(self)
    fresh = [r for r in self.session.journal.records if r.kind == "check" and "bench_n" in r.data
             and r.data["bench_n"] not in seen]
    def drawn():
        now = time.time()
        for record in fresh:
            seen.setdefault(record.data["bench_n"], now - record.data["t"])
    self.call_after_refresh(drawn)

ControlRoomApp.session_changed = session_changed

async def main():
    app = make_app(load_config(config), write=False, start_polling=False, check_on_start=False,
                   journal_dir=Path(journals), operator={"user": "watcher", "host": label})
    async with app.run_test(size=(80, 24)) as pilot:
        print("READY", flush=True)  # on the Checklist, whose Token Zombie row each record changes
        deadline = time.monotonic() + 120
        while len(seen) < count and time.monotonic() < deadline:
            await pilot.pause(0.05)
    print(json.dumps(seen), flush=True)

asyncio.run(main())
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def run(watchers: int, records: int, gap_s: float) -> None:
    with EmbeddedPostgres() as server, tempfile.TemporaryDirectory(prefix="controlroom-fanout-") as work:
        directory = Path(work)
        (directory / "bench.env").write_text(f"BENCH_DSN={server.dsn}\nBENCH_KEY=unused\n")
        config = directory / "controlroom.toml"
        config.write_text(CONFIG)
        driver = ReleaseEngine.open(load_config(config), write=True, journal_dir=directory / "driver",
                                    operator={"user": "driver", "host": "bench"})
        processes = [subprocess.Popen([sys.executable, "-c", WATCHER, str(config), str(directory / f"w{n}"),
                                       f"watcher-{n}", str(records)], stdout=subprocess.PIPE, text=True)
                     for n in range(watchers)]
        try:
            for process in processes:
                assert process.stdout is not None and process.stdout.readline().strip() == "READY"
            while driver.crew().watchers < watchers:  # type: ignore[union-attr]
                await asyncio.sleep(0.1)
                driver.refresh()
            began = time.perf_counter()
            for n in range(records):
                # A checklist result as the driver journals one: the watcher's Checklist row changes.
                result = {"id": "token-zombie", "title": "Token Zombie Test", "section": "security", "status": "pass",
                          "evidence": f"401 in {n % 90 + 3} ms, 0 retries (run {n})", "duration_ms": 12.0}
                driver.journal.append("check", {"results": [result], "bench_n": n, "t": time.time()})
                await asyncio.sleep(gap_s)
            appended_s = time.perf_counter() - began
            latencies: list[float] = []
            for process in processes:
                out, _ = process.communicate(timeout=180)
                seen = json.loads(out.strip().splitlines()[-1])
                latencies += [value * 1000 for value in seen.values()]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
            driver.close()
    missing = watchers * records - len(latencies)
    print(f"shared journal fan-out: {watchers} watcher apps × {records} records, one append every "
          f"{gap_s * 1000:.0f} ms ({records / appended_s:.0f} appends/s including the gaps)")
    print(f"  driver's append → watcher's screen drawn: p50 {percentile(latencies, 0.5):.1f} ms, "
          f"p90 {percentile(latencies, 0.9):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
          f"max {max(latencies):.1f} ms (mean {statistics.mean(latencies):.1f} ms; goal p99 ≤ 200 ms)"
          + (f"; {missing} never arrived" if missing else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=5)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(run(args.watchers, args.records, args.gap_ms / 1000))


if __name__ == "__main__":
    main()
