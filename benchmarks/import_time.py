"""How long the TUI takes to import, in fresh interpreters. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/import_time.py [--runs 9] [--top 10]

Each line is the median and min–max over `--runs` fresh processes of the wall time of one
`import` statement (the interpreter's own start-up not counted), against the floor: Textual's
app and widgets alone. Then the slowest imports of the TUI by cumulative time (`-X importtime`).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys

TARGETS = {
    # A bare Header + DataTable + Footer app (textual.widgets loads each widget on first use).
    "floor: textual.app + Header, DataTable, Footer": (
        "import textual.app; from textual.widgets import DataTable, Footer, Header"
    ),
    "controlroom.screens.app (the TUI)": "import controlroom.screens.app",
    "TUI entry before the first frame": (
        "import controlroom.cli.main, controlroom.cli.tui, controlroom.screens.app"
    ),
}


def timed(statement: str, python: str = sys.executable) -> float:
    code = f"import time; began = time.perf_counter(); {statement}; print(time.perf_counter() - began)"
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout) * 1000


def top_imports(statement: str, count: int) -> list[tuple[int, str]]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                            capture_output=True, text=True, check=True)
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
    pythons = {"": sys.executable} | ({"against: ": args.against} if args.against else {})
    figures: dict[str, list[float]] = {}
    for python in pythons.values():
        timed("import controlroom.screens.app", python)  # warm the file cache; not counted
    for _ in range(args.runs):  # interleaved, so a burst of load hits every target alike
        for label, python in pythons.items():
            for name, statement in TARGETS.items():
                figures.setdefault(label + name, []).append(timed(statement, python))
    for name, values in figures.items():
        print(f"{name:57} median {statistics.median(values):6.0f} ms  "
              f"(min {min(values):.0f}, max {max(values):.0f}, {args.runs} runs)")
    print(f"\ntop {args.top} by cumulative import time (one run of -X importtime):")
    for micros, module in top_imports(TARGETS["controlroom.screens.app (the TUI)"], args.top):
        print(f"  {micros / 1000:7.1f} ms  {module}")


if __name__ == "__main__":
    main()
