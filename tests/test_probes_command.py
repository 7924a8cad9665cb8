"""Command probes run real /bin/sh processes: exit codes judged, output tail kept and
redacted, secrets exported under their variable names, timeouts kill the whole group."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from controlroom.checks import ProbeContext, run_probe

from probe_support import make_loaded

pytestmark = pytest.mark.timeout(60)

TOKEN = "ghp_commandtestsecret0123456789"


def command_item(run: str, **extra: Any) -> dict[str, Any]:
    return {"id": "cmd", "title": "Command", "kind": "command", "run": run, **extra}


async def run(tmp_path: Path, command: str, *, environ: dict[str, str] | None = None, **extra: Any):  # noqa: ANN201
    loaded = make_loaded([command_item(command, **extra)], secrets={"scanner_token": TOKEN}, config_dir=tmp_path)
    async with ProbeContext(loaded, environ=environ) as ctx:
        return await run_probe(loaded.runbook.items()[0][1], ctx)


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped by init counts as gone)."""
    for _ in range(50):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    os.kill(pid, 9)
    return False


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
    result = await run(tmp_path, 'echo "token is $TEST_SCANNER_TOKEN"; test -n "$TEST_SCANNER_TOKEN"', secrets=["scanner_token"])
    assert result.status == "pass"
    assert TOKEN not in result.evidence and "token is [redacted]" in result.evidence


async def test_only_the_secrets_the_item_lists_are_exported(tmp_path: Path) -> None:
    # The operator's shell has the DSN exported too: the command must not inherit it.
    environ = {**os.environ, "TEST_DATABASE_DSN": "postgresql://u:inherited-pw-42@db/pos"}
    unlisted = await run(tmp_path, 'test -z "$TEST_SCANNER_TOKEN" && test -z "$TEST_DATABASE_DSN"', environ=environ)
    assert unlisted.status == "pass", unlisted.evidence
    listed = await run(
        tmp_path, 'test -n "$TEST_SCANNER_TOKEN" && test -z "$TEST_DATABASE_DSN"', environ=environ, secrets=["scanner_token"]
    )
    assert listed.status == "pass", listed.evidence
    unknown = await run(tmp_path, "true", secrets=["nope"])
    assert unknown.status == "error" and "'nope' is not defined" in unknown.evidence


async def test_a_listed_secret_that_is_not_set_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    loaded = make_loaded([command_item("true", secrets=["unset_token"])], secrets={"unset_token": ""}, config_dir=tmp_path)
    async with ProbeContext(loaded) as ctx:
        result = await run_probe(loaded.runbook.items()[0][1], ctx)
    assert result.status == "error"
    assert result.evidence == "secret 'unset_token' is not set: export TEST_UNSET_TOKEN=..."


async def test_a_secret_straddling_the_line_cut_is_redacted(tmp_path: Path) -> None:
    # 290 characters, then the token: a cut at 300 characters falls inside it.
    result = await run(tmp_path, f"printf '%s' \"$(head -c 290 /dev/zero | tr '\\0' x)\"; echo '{TOKEN} tail'")
    assert result.status == "pass"
    assert "ghp_" not in result.evidence and "x[redacted" in result.evidence


async def test_a_secret_straddling_the_cut_of_a_huge_line_is_redacted(tmp_path: Path) -> None:
    # 65 537 bytes without a newline (the token, then 290 y's, at its end): the line is cut
    # at its start when its last byte arrives, whatever the chunks it arrives in.
    command = f"head -c {65537 - len(TOKEN) - 290} /dev/zero | tr '\\0' x; printf '%s' '{TOKEN}'; head -c 290 /dev/zero | tr '\\0' y"
    result = await run(tmp_path, command)
    assert result.status == "pass"
    assert TOKEN[-10:] not in result.evidence and "ghp_" not in result.evidence
    assert result.evidence.splitlines()[1].startswith("…") and result.evidence.endswith("y" * 290)


async def test_runs_in_cwd_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "marker.txt").write_text("here")
    result = await run(tmp_path, "cat marker.txt", cwd="repo")
    assert result.status == "pass" and "here" in result.evidence
    missing = await run(tmp_path, "true", cwd="nowhere")
    assert missing.status == "error" and "does not exist" in missing.evidence


@pytest.mark.parametrize(
    "command",
    [
        # A grandchild that ignores SIGTERM: only killing the group (with SIGKILL) ends it.
        "sh -c 'trap \"\" TERM; echo $$ > {pidfile}; sleep 30' & echo started; wait",
        # The shell exits at once; `sleep`, in the background, keeps the output pipe open.
        "sleep 30 & echo $! > {pidfile}; echo started",
    ],
    ids=["grandchild-ignoring-sigterm", "background-child-after-the-shell-exited"],
)
async def test_timeout_kills_the_process_group(tmp_path: Path, command: str) -> None:
    pidfile = tmp_path / "child.pid"
    began = time.monotonic()
    result = await run(tmp_path, command.format(pidfile=pidfile), timeout_s=0.5)
    assert result.status == "error"
    assert "timed out after 0.5 s, process group killed" in result.evidence and "started" in result.evidence
    assert time.monotonic() - began < 5
    assert gone(int(pidfile.read_text())), "a child survived the timeout"


def test_a_timed_out_command_leaves_nothing_for_the_garbage_collector(tmp_path: Path) -> None:
    """As `controlroom check` runs it: one event loop, closed at the end. A subprocess
    transport left open would be closed by the garbage collector after the loop is gone and
    print "Exception ignored … Event loop is closed"."""
    script = f"""
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from probe_support import make_loaded
from controlroom.checks import ProbeContext, run_probe

async def main():
    loaded = make_loaded([{{"id": "c", "title": "C", "kind": "command", "run": "sleep 30 & echo started",
                           "timeout_s": 0.5}}], config_dir=Path({str(tmp_path)!r}))
    async with ProbeContext(loaded) as ctx:
        result = await run_probe(loaded.runbook.items()[0][1], ctx)
    print(result.status)

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == "error", done.stderr
    assert "Event loop is closed" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


async def test_escape_sequences_in_output_are_removed(tmp_path: Path) -> None:
    result = await run(tmp_path, r"printf '\033[31mred\033[0m \033]0;title\007done\n'")
    assert result.status == "pass"
    assert "\x1b" not in result.evidence and "\x07" not in result.evidence
    assert "red done" in result.evidence


async def test_no_output(tmp_path: Path) -> None:
    result = await run(tmp_path, "true")
    assert result.status == "pass" and result.evidence.endswith("(no output)")


async def test_placeholders_in_a_command_are_filled_in_and_shell_quoted(tmp_path: Path) -> None:
    """{urls.NAME} and {environment} in `run` are the environment's values, each one shell
    word: a URL with `&` and `;` in it is passed whole, never run as commands."""
    marker = tmp_path / "injected"
    loaded = make_loaded([command_item("printf '%s|%s' {urls.metrics} {environment}")], config_dir=tmp_path,
                         urls={"metrics": f"http://127.0.0.1:9/q?a=1&b=2;touch {marker}"})
    async with ProbeContext(loaded) as ctx:
        result = await run_probe(loaded.runbook.items()[0][1], ctx)
    assert result.status == "pass", result.evidence
    assert f"http://127.0.0.1:9/q?a=1&b=2;touch {marker}|test env" in result.evidence
    assert not marker.exists()
