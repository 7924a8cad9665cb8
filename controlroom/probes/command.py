"""Command: run a configured shell command (e.g. the seed's
`npm test -- --testNamePattern="Token Zombie UAT"`, or a secret scanner) and judge its
exit code.

It runs as `/bin/sh -c RUN` in `cwd` (relative to the config file's directory), in its own
process group, with the environment's secrets exported under their variable names. On
timeout the whole group is killed (SIGTERM, then SIGKILL). The last lines of its output
(stdout and stderr together) are the evidence, with secrets redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from pathlib import Path

from controlroom.probes.base import Outcome, ProbeContext, ProbeError, ms
from controlroom.runbook.models import CommandItem

TAIL_LINES = 10
MAX_LINE_CHARS = 300
KILL_GRACE_S = 1.0


def command_environment(ctx: ProbeContext) -> dict[str, str]:
    env = dict(ctx.environ)
    for logical in ctx.loaded.environment.secrets:
        if ctx.secrets.has(logical):
            env[ctx.secrets.variable(logical)] = ctx.secrets.get(logical)
    return env


def working_directory(item: CommandItem, ctx: ProbeContext) -> Path:
    cwd = Path(item.cwd).expanduser()
    if not cwd.is_absolute():
        cwd = ctx.loaded.config_path.parent / cwd
    return cwd


async def probe(item: CommandItem, ctx: ProbeContext) -> Outcome:
    cwd = working_directory(item, ctx)
    if not cwd.is_dir():
        raise ProbeError(f"working directory {cwd} does not exist")
    began = time.perf_counter()
    try:
        process = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            item.run,
            cwd=cwd,
            env=command_environment(ctx),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    except OSError as error:
        raise ProbeError(f"cannot start /bin/sh: {error.strerror or error}") from None

    tail: deque[str] = deque(maxlen=TAIL_LINES)
    timed_out = False
    try:
        try:
            await asyncio.wait_for(_collect(process, tail), timeout=item.timeout_s)
        except TimeoutError:
            timed_out = True
    finally:
        if process.returncode is None:
            await _kill_group(process)
    elapsed = ms((time.perf_counter() - began) * 1000)
    output = "\n".join(tail).strip()
    shown = f"\n{output}" if output else " (no output)"
    measured = {"exit_code": process.returncode, "timed_out": timed_out}
    if timed_out:
        return Outcome("error", f"timed out after {item.timeout_s:g} s, process group killed{shown}", measured)
    code = process.returncode
    if code == item.expect_exit:
        return Outcome("pass", f"exit {code} in {elapsed}{shown}", measured)
    if code is not None and code < 0:
        return Outcome("error", f"killed by signal {-code} after {elapsed}{shown}", measured)
    return Outcome("fail", f"exit {code} (expected {item.expect_exit}) in {elapsed}{shown}", measured)


async def _collect(process: asyncio.subprocess.Process, tail: deque[str]) -> None:
    assert process.stdout is not None
    pending = b""
    while chunk := await process.stdout.read(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            tail.append(_line(line))
        if len(pending) > 65536:  # a huge line without newline: keep its end
            pending = pending[-MAX_LINE_CHARS:]
    if pending:
        tail.append(_line(pending))
    await process.wait()


def _line(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 1] + "…"


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the group, a moment's grace, then SIGKILL to whatever of it is left (a
    grandchild that ignores SIGTERM included)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(process.wait()), timeout=KILL_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(process.wait(), timeout=KILL_GRACE_S)
