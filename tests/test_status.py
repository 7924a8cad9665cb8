"""`controlroom status` as a pipeline runs it: the real CLI on journals the engine wrote
during real sandbox releases; its exit codes, its JSON, and --watch --timeout."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlroom.config.loader import load_config
from controlroom.sandbox.runner import Sandbox
from controlroom.release.engine import ReleaseEngine
from release_support import complete_every_phase


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=30, simulate=False) as running:
        yield running


def status(journals: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTROLROOM_JOURNAL_DIR": str(journals)}
    return subprocess.run([sys.executable, "-m", "controlroom", "status", *args], capture_output=True, text=True,
                          env=env, timeout=60)


async def test_exit_codes_follow_the_release(sandbox: Sandbox, tmp_path: Path) -> None:
    config = str(sandbox.config_path)
    assert status(tmp_path, "--config", config).returncode == 5  # no deployment yet

    session = ReleaseEngine.open(load_config(sandbox.config_path), write=True, journal_dir=tmp_path)
    await session.start_deploy("v2.15.0", override_reason="status test")
    running = status(tmp_path, "--config", config, "--json")
    assert running.returncode == 3, running.stderr
    shown = json.loads(running.stdout)
    assert shown["stage"] == "deploying" and shown["version"] == "v2.15.0" and shown["phase"] == "pre"
    assert shown["target_s"] == 900 and shown["open_in"] and str(os.getpid()) in shown["open_in"]
    assert [e["kind"] for e in shown["last_events"]][-2:] == ["deploy_started", "phase_started"]

    session._append("step_outcome", {"step_id": "env-health", "phase_id": "pre", "status": "failed",
                                     "summary": "503", "reason": ""})
    session.finish_deploy()  # a failed step: finished as failed
    failed = status(tmp_path, "--config", config)
    assert failed.returncode == 4 and "finished: failed" in failed.stdout
    session.close()

    again = ReleaseEngine.open(load_config(sandbox.config_path), write=True, journal_dir=tmp_path)
    await again.start_deploy("v2.15.1", override_reason="status test")
    complete_every_phase(again)
    again.finish_deploy()
    done = status(tmp_path, "--config", config, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["outcome"] == "success"
    assert status(tmp_path, "--config", config, "--timeout", "1").returncode == 2  # --timeout needs --watch


async def test_watch_waits_for_the_finish_and_gives_up_at_the_timeout(sandbox: Sandbox, tmp_path: Path) -> None:
    session = ReleaseEngine.open(load_config(sandbox.config_path), write=True, journal_dir=tmp_path)
    await session.start_deploy("v2.15.0", override_reason="status test")
    began = time.monotonic()
    timed_out = status(tmp_path, "--config", str(sandbox.config_path), "--watch", "--timeout", "1.5")
    assert timed_out.returncode == 3 and time.monotonic() - began < 20

    env = {**os.environ, "CONTROLROOM_JOURNAL_DIR": str(tmp_path)}
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controlroom", "status", "--config", str(sandbox.config_path), "--watch",
        "--timeout", "60", "--json", env=env, stdout=asyncio.subprocess.PIPE)
    await asyncio.sleep(2.5)
    assert watcher.returncode is None  # still waiting
    complete_every_phase(session)
    session.finish_deploy()
    out, _ = await asyncio.wait_for(watcher.communicate(), timeout=30)
    assert watcher.returncode == 0
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert lines[0]["stage"] == "deploying" and lines[-1]["stage"] == "finished: succeeded"


def test_a_file_that_is_not_a_journal_is_one_line_and_exit_2(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n" * 26)
    for path, says in ((text, "not a controlroom journal"), (Path("/dev/zero"), "not a regular file")):
        done = status(tmp_path, "--journal", str(path))
        assert done.returncode == 2, done
        assert done.stderr.strip().count("\n") == 0 and says in done.stderr and "Traceback" not in done.stderr
