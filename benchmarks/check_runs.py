"""`controlroom check` ten times in a row against one sandbox (DESIGN.md §6: every run's total
≤ 1.2× its slowest probe): prints figures, asserts nothing.

    .venv/bin/python benchmarks/check_runs.py [RUNS]

Per run: the check's total, its slowest probe (and which), their ratio, and whether it is
within 1.2×. The sandbox (scenario "healthy") is started once; each run is the real CLI
(`python -m controlroom check --json`), so the figures are what an operator gets, without
the interpreter's start-up (the check's own `duration_ms`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from controlroom.sandbox.runner import Sandbox

BUDGET = 1.2


def one_check(sandbox: Sandbox) -> dict:
    env = {**os.environ, **sandbox.secret_environment()}
    done = subprocess.run([sys.executable, "-m", "controlroom", "check", "--config", str(sandbox.config_path), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    return json.loads(done.stdout)


async def main(runs: int) -> None:
    async with Sandbox(scenario="healthy") as sandbox:
        print(f"controlroom check × {runs} against one sandbox ({sandbox.base_url})")
        print(f"{'run':>3}  {'total ms':>9}  {'slowest ms':>10}  {'ratio':>6}  {'≤ 1.2×':>6}  slowest probe")
        ratios = []
        for run in range(1, runs + 1):
            report = await asyncio.to_thread(one_check, sandbox)
            total = report["duration_ms"]
            slowest = max(report["checks"], key=lambda check: check["duration_ms"])
            ratio = total / slowest["duration_ms"] if slowest["duration_ms"] else float("inf")
            ratios.append(ratio)
            within = "yes" if ratio <= BUDGET else "NO"
            print(f"{run:>3}  {total:>9.1f}  {slowest['duration_ms']:>10.1f}  {ratio:>6.2f}  {within:>6}  "
                  f"{slowest['id']} ({slowest['status']})")
        print(f"ratio: min {min(ratios):.2f}, max {max(ratios):.2f}; within {BUDGET}×: "
              f"{sum(r <= BUDGET for r in ratios)} of {runs}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
