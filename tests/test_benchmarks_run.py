"""`benchmarks/run.py --json` keeps the document README's benchmark table is made from: each
figure with its goal, median, min–max, sample count and pass/fail. Its shape only: the figures
themselves are printed by the benchmark, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_run_json_gives_every_figure_its_goal_spread_and_verdict() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--only", "import", "--quick", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=90)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["quick"] is True and document["machine"]["cpus"] >= 1
    [figure] = document["figures"]
    assert figure["name"] == "import of the TUI" and figure["group"] == "import"
    assert figure["goal"] == {"limit": 250, "unit": "ms", "compare": "<=", "of": "", "text": "<= 250 ms"}
    assert figure["samples"] >= 7 and figure["min"] <= figure["median"] <= figure["max"]
    assert figure["reference"]["what"] == "import textual.app" and figure["reference"]["samples"] == figure["samples"]
    assert figure["reference"]["unit"] == "ms"
    assert isinstance(figure["pass"], bool) and document["all_pass"] == figure["pass"]
