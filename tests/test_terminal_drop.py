"""The control room always exits when its terminal goes away (an SSH drop, a killed tmux
session), whatever it is doing: starting the sandbox, polling, a dialog open, a step
running. Each trial runs the real `controlroom` in a real pseudo-terminal, closes the
terminal's master side at a random moment (the kernel then hangs up the terminal and sends
SIGHUP, as sshd does), and checks that every process of the run and every temporary
directory it made are gone within 5 seconds.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from pty_support import Terminal

EXIT_BUDGET_S = 5.0
TRIALS = {"start-up": 8, "dialog": 6, "step": 6}  # 20 terminal drops in all


def temp_dirs() -> set[Path]:
    roots = {Path(tempfile.gettempdir()), Path("/tmp")}
    return {path for root in roots for path in root.glob("controlroom-*")}


def drop_and_check(terminal: Terminal, before: set[Path], label: str) -> float:
    """Close the terminal; every process of the run and its new temp dirs gone in 5 s."""
    family = terminal.family()
    assert family, f"{label}: the control room is not running"
    began = time.monotonic()
    terminal.hang_up()
    deadline = began + EXIT_BUDGET_S
    while (alive := [p for p in family if running(p)]) and time.monotonic() < deadline:
        terminal.process.poll()  # reap our own child, so it is not counted as a zombie
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    left = [describe(p) for p in alive]
    for process in alive:  # do not leave them to the next trial
        with contextlib.suppress(psutil.Error):
            process.kill()
    terminal.process.wait(timeout=10)
    assert not left, f"{label}: still running {elapsed:.1f} s after the terminal went: {left}"
    deadline = time.monotonic() + max(0.5, EXIT_BUDGET_S - elapsed)
    while (temp_dirs() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (temp_dirs() - before), f"{label}: left behind {sorted(temp_dirs() - before)}"
    return elapsed


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, IndexError):  # IndexError: psutil reading the empty stat of a process being reaped
        return False


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline()[:4])}"
    except psutil.Error:
        return str(process.pid)


def controlroom_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "TEXTUAL"))}
    env.update(TERM="xterm-256color", COLUMNS="80", LINES="24")
    return env


@pytest.fixture(scope="module")
def journal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("journals")


def test_terminal_drop_during_demo_start_up_and_with_a_dialog_open(journal_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(8)
    env = {**controlroom_env(), "CONTROLROOM_JOURNAL_DIR": str(journal_dir)}
    demo = [sys.executable, "-m", "controlroom", "demo", "--locations", "40"]
    times: list[float] = []
    for trial in range(TRIALS["start-up"]):
        before = temp_dirs()
        terminal = Terminal(demo, env, tmp_path)
        # From the sandbox's first moments to the app polling: about 0 to 4 s in.
        time.sleep(rng.uniform(0.2, 4.0))
        times.append(drop_and_check(terminal, before, f"start-up trial {trial}"))
    for trial in range(TRIALS["dialog"]):
        before = temp_dirs()
        terminal = Terminal([*demo, "--write"], env, tmp_path)  # read-only refuses `a` before any dialog
        terminal.wait_for_text("Checklist")
        terminal.wait_for_text("PENDING")
        terminal.type("n" + "a")  # the next item awaiting attestation: its confirmation dialog
        terminal.wait_for_text("Cancel")
        time.sleep(rng.uniform(0.0, 1.0))
        times.append(drop_and_check(terminal, before, f"dialog trial {trial}"))
    print(f"\n{len(times)} terminal drops (start-up, dialog): all gone, slowest {max(times):.2f} s")


RUNBOOK = """\
name = "slow step"

[[checklist.sections]]
id = "basics"
title = "Basics"

[[checklist.sections.items]]
id = "on-call"
title = "On-call engineer available"
kind = "manual"

[[deployment.phases]]
id = "deploy"
title = "Deploy"
minutes = 5
steps = [
  { id = "slow", title = "A long step", action = { kind = "command", run = "sleep 120", modifying = false, timeout_s = 300 } },
]

[[rollback.plans]]
id = "emergency"
title = "Emergency rollback"
target_minutes = 5
steps = [{ id = "back", title = "Previous version", action = { kind = "switch_version" } }]

[[escalation.levels]]
level = 1
title = "On-call engineer"
from_minutes = 0
contacts = ["@oncall"]
"""

CONFIG = """\
runbook = "runbook.toml"

[environment]
name = "slow-step test"
production = false
deploy_command = "true"
"""


def test_terminal_drop_while_a_step_runs(journal_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "runbook.toml").write_text(RUNBOOK)
    (tmp_path / "controlroom.toml").write_text(CONFIG)
    argv = [sys.executable, "-m", "controlroom", "--config", str(tmp_path / "controlroom.toml"), "--write"]
    rng = random.Random(9)
    times: list[float] = []
    for trial in range(TRIALS["step"]):
        before = temp_dirs()
        # A journal directory each: no trial is offered the previous one's deployment to resume.
        env = {**controlroom_env(), "CONTROLROOM_JOURNAL_DIR": str(journal_dir / f"step-{trial}")}
        terminal = Terminal(argv, env, tmp_path)
        terminal.wait_for_text("PENDING")
        terminal.type("d")
        terminal.wait_for_text("A long step")
        terminal.type("s")
        time.sleep(0.3)
        terminal.type(f"v1.{trial}.0\r")
        time.sleep(0.5)
        terminal.type("sleep-step terminal drop trial\r")  # the override reason (PENDING)
        deadline = time.monotonic() + 15
        while not any("sleep" in " ".join(p.cmdline()) for p in terminal.family() if p.is_running()):
            assert time.monotonic() < deadline, f"the step never started:\n{terminal.screen_text()[-1500:]}"
            if "running" not in terminal.screen_text()[-4000:]:
                terminal.type("x")
            time.sleep(0.3)
        time.sleep(rng.uniform(0.0, 1.0))
        times.append(drop_and_check(terminal, before, f"step trial {trial}"))
    print(f"\n{len(times)} terminal drops (a step running): all gone, slowest {max(times):.2f} s")
