"""How long the TUI takes to import, in fresh interpreters. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/import_time.py [--runs 9] [--top 10]

Each line is the median and min–max over `--runs` fresh processes of the wall time of one
`import` statement (the interpreter's own start-up not counted), against the floor: Textual's
app and widgets alone. Then the slowest imports of the TUI by cumulative time (`-X importtime`).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# A config on the default runbook (the snapshot tests'): loading it validates every model the
# TUI starts with, as `controlroom --config FILE` does before the first frame.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.snapshot_support import config_toml  # noqa: E402

# As an installed package runs: from bytecode (the warm-up run writes it), even where the
# environment says not to write any (compiling controlroom's sources would be counted otherwise).
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
CONFIG_PATH = Path(tempfile.mkdtemp(prefix="controlroom-import-time-")) / "controlroom.toml"

TARGETS = {
    # A bare Header + DataTable + Footer app (textual.widgets loads each widget on first use).
    "floor: textual.app + Header, DataTable, Footer": (
        "import textual.app; from textual.widgets import DataTable, Footer, Header"
    ),
    "controlroom.screens.app (the TUI)": "import controlroom.screens.app",
    "TUI entry before the first frame": (
        "import controlroom.cli.main, controlroom.cli.tui, controlroom.screens.app"
    ),
    "the same + load_config (what runs before the app)": (
        "import controlroom.cli.main, controlroom.cli.tui, controlroom.screens.app; "
        f"from controlroom.config.loader import load_config; load_config({str(CONFIG_PATH)!r}, environ={{}})"
    ),
}


def timed(statement: str, python: str = sys.executable) -> tuple[float, float]:
    """Wall and CPU milliseconds of `statement` in a fresh interpreter (the CPU figure is the
    steadier one on a loaded machine: other processes' work does not count in it)."""
    code = ("import time; wall, cpu = time.perf_counter(), time.process_time(); "
            f"{statement}; print(time.perf_counter() - wall, time.process_time() - cpu)")
    # From a neutral directory: `-c` puts the working directory first on sys.path, so from a
    # checkout every interpreter would import that checkout's controlroom.
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, env=ENV,
                            cwd=CONFIG_PATH.parent)
    wall, cpu = result.stdout.split()
    return float(wall) * 1000, float(cpu) * 1000


def top_imports(statement: str, count: int) -> list[tuple[int, str]]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                            capture_output=True, text=True, check=True, env=ENV, cwd=CONFIG_PATH.parent)
    rows = []
    for line in result.stderr.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)", line)
        if found:
            rows.append((int(found[1]), found[2]))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--against", metavar="PYTHON", help="another interpreter to time the same imports with")
    args = parser.parse_args()
    CONFIG_PATH.write_text(config_toml(), encoding="utf-8")
    pythons = {"": sys.executable} | ({"against: ": args.against} if args.against else {})
    figures: dict[str, list[tuple[float, float]]] = {}
    for python in pythons.values():  # warm the file cache and write the bytecode; not counted
        timed(TARGETS["the same + load_config (what runs before the app)"], python)
    for _ in range(args.runs):  # interleaved, so a burst of load hits every target alike
        for label, python in pythons.items():
            for name, statement in TARGETS.items():
                figures.setdefault(label + name, []).append(timed(statement, python))
    print(f"{'import':57} {'wall ms: median (min–max)':>27}   {'CPU ms: median (min–max)':>26}")
    for name, pairs in figures.items():
        walls, cpus = [w for w, _ in pairs], [c for _, c in pairs]
        print(f"{name:57} {statistics.median(walls):8.0f} ({min(walls):4.0f}–{max(walls):4.0f})        "
              f"{statistics.median(cpus):8.0f} ({min(cpus):4.0f}–{max(cpus):4.0f})")
    print(f"({args.runs} fresh processes each, interleaved)")
    print(f"\ntop {args.top} by cumulative import time (one run of -X importtime):")
    for micros, module in top_imports(TARGETS["controlroom.screens.app (the TUI)"], args.top):
        print(f"  {micros / 1000:7.1f} ms  {module}")


if __name__ == "__main__":
    main()
