"""`controlroom demo --join` finds the newest demo or sandbox still running for this user, says
which, and says so in one line when there is none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from controlroom.sandbox.joining import NoSandboxRunning, advertised, running_sandbox, running_sandboxes


def test_the_newest_live_sandbox_is_joined_and_a_dead_ones_pointer_is_removed(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROLROOM_SANDBOX_DIR", str(tmp_path / "pointers"))
    with pytest.raises(NoSandboxRunning, match="no demo or sandbox is running"):
        running_sandbox()
    older, newer = tmp_path / "older.toml", tmp_path / "newer.toml"
    older.write_text("")
    newer.write_text("")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "pointers").mkdir()
    (tmp_path / "pointers" / f"{dead.pid}.json").write_text(
        f'{{"config": "{older}", "pid": {dead.pid}, "scenario": "healthy", "started": "2026-12-07T10:00:00+00:00"}}')
    with advertised(newer, "fudo-outage"):
        sandbox, others = running_sandbox()
        assert sandbox.config == newer and sandbox.pid == os.getpid() and others == 0
        assert str(sandbox).startswith("the fudo-outage sandbox started at ")
        assert not (tmp_path / "pointers" / f"{dead.pid}.json").exists()  # a killed one's pointer goes
    assert running_sandboxes() == []  # stopped: its pointer went with it


def test_join_without_a_running_sandbox_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "CONTROLROOM_SANDBOX_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "controlroom", "demo", "--join"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["controlroom: error: no demo or sandbox is running for this user: "
                                                  "start one in another terminal: controlroom sandbox (or controlroom "
                                                  "demo --write)"]
    bad = subprocess.run([sys.executable, "-m", "controlroom", "demo", "--join", "--scenario", "healthy"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "drop --scenario" in bad.stderr
