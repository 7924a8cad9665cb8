"""Command probes run real /bin/sh processes: exit codes judged, output tail kept and
redacted, secrets exported under their variable names, timeouts kill the whole group."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from controlroom.probes import ProbeContext, run_probe

from probe_support import make_loaded

pytestmark = pytest.mark.timeout(60)

TOKEN = "ghp_commandtestsecret0123456789"


def command_item(run: str, **extra: Any) -> dict[str, Any]:
    return {"id": "cmd", "title": "Command", "kind": "command", "run": run, **extra}


async def run(tmp_path: Path, command: str, **extra: Any):  # noqa: ANN201
    loaded = make_loaded([command_item(command, **extra)], secrets={"scanner_token": TOKEN}, config_dir=tmp_path)
    async with ProbeContext(loaded) as ctx:
        return await run_probe(loaded.runbook.items()[0][1], ctx)


async def test_exit_zero_passes_with_the_output_tail(tmp_path: Path) -> None:
    result = await run(tmp_path, "for i in $(seq 1 30); do echo line $i; done; echo done >&2")
    assert result.status == "pass"
    lines = result.evidence.splitlines()
    assert lines[0].startswith("exit 0 in ")
    assert lines[1:] == [f"line {i}" for i in range(22, 31)] + ["done"]  # the last 10 lines


async def test_unexpected_exit_fails(tmp_path: Path) -> None:
    result = await run(tmp_path, "echo '3 secrets found'; exit 3")
    assert result.status == "fail"
    assert result.evidence.startswith("exit 3 (expected 0)") and "3 secrets found" in result.evidence
    assert (await run(tmp_path, "exit 3", expect_exit=3)).status == "pass"


async def test_secrets_are_exported_and_redacted(tmp_path: Path) -> None:
    result = await run(tmp_path, 'echo "token is $TEST_SCANNER_TOKEN"; test -n "$TEST_SCANNER_TOKEN"')
    assert result.status == "pass"
    assert TOKEN not in result.evidence and "token is [redacted]" in result.evidence


async def test_runs_in_cwd_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "marker.txt").write_text("here")
    result = await run(tmp_path, "cat marker.txt", cwd="repo")
    assert result.status == "pass" and "here" in result.evidence
    missing = await run(tmp_path, "true", cwd="nowhere")
    assert missing.status == "error" and "does not exist" in missing.evidence


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # A grandchild that ignores SIGTERM: only killing the group (with SIGKILL) ends it.
    began = time.monotonic()
    result = await run(tmp_path, f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; sleep 30' & echo started; wait", timeout_s=0.5)
    assert result.status == "error"
    assert "timed out after 0.5 s, process group killed" in result.evidence and "started" in result.evidence
    assert time.monotonic() - began < 5
    child = int(pidfile.read_text())
    for _ in range(50):
        if not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        pytest.fail("the grandchild survived the timeout")


async def test_escape_sequences_in_output_are_removed(tmp_path: Path) -> None:
    result = await run(tmp_path, r"printf '\033[31mred\033[0m \033]0;title\007done\n'")
    assert result.status == "pass"
    assert "\x1b" not in result.evidence and "\x07" not in result.evidence
    assert "red done" in result.evidence


async def test_no_output(tmp_path: Path) -> None:
    result = await run(tmp_path, "true")
    assert result.status == "pass" and result.evidence.endswith("(no output)")
