"""Command: run a configured shell command (e.g. the seed's
`npm test -- --testNamePattern="Token Zombie UAT"`, or a secret scanner) and judge its
exit code.

It runs as `/bin/sh -c RUN` in `cwd` (relative to the config file's directory), in its own
process group. Only the secrets the item lists in `secrets` are exported to it (under their
variable names); every other secret variable of the environment is removed from what it
inherits. On timeout the whole group is killed (SIGTERM, then SIGKILL), even when the shell
itself has already exited and only a background child still holds the output pipe. The last
lines of its output (stdout and stderr together) are the evidence, redacted before any cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path

from controlroom.infra import shutdown
from controlroom.checks.base import Outcome, ProbeContext, ProbeError, ms, shorten
from controlroom.config.models import CommandItem

TAIL_LINES = 10
MAX_LINE_CHARS = 300
# A line longer than this without a newline is cut at its start; its end is what is kept.
# Far more than is shown (MAX_LINE_CHARS), so a secret straddling that cut never reaches the
# part that is shown.
MAX_PENDING_BYTES = 65536
KEEP_PENDING_BYTES = 16384
KILL_GRACE_S = 1.0
READ_CHUNK = 65536


def command_environment(item: CommandItem, ctx: ProbeContext) -> dict[str, str]:
    """The inherited environment without any of the environment's secret variables, plus the
    secrets the item asks for."""
    declared = ctx.loaded.environment.secrets
    env = {key: value for key, value in ctx.environ.items() if key not in set(declared.values())}
    for logical in item.secrets:
        if logical not in declared:
            raise ProbeError(f"secret {logical!r} is not defined in the environment's [environment.secrets]")
        env[ctx.secrets.variable(logical)] = ctx.secrets.get(logical)  # MissingSecret names the variable
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
    env = command_environment(item, ctx)
    began = time.perf_counter()
    try:
        process = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            ctx.shell(item.run),
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    except OSError as error:
        raise ProbeError(f"cannot start /bin/sh: {error.strerror or error}") from None

    output = _Output(ctx.redact)
    timed_out = False
    finished = False
    with shutdown.emergency(partial(shutdown.kill_group, process.pid)):  # an emergency exit ends it too
        try:
            try:
                await asyncio.wait_for(_collect(process, output), timeout=item.timeout_s)
                finished = True
            except TimeoutError:
                timed_out = True
        finally:
            if not finished:  # timed out, or cancelled: nothing of it may outlive the probe
                await kill_process_group(process)
    elapsed = ms((time.perf_counter() - began) * 1000)
    text = "\n".join(output.tail).strip()
    shown = f"\n{text}" if text else " (no output)"
    measured = {"exit_code": process.returncode, "timed_out": timed_out}
    if timed_out:
        return Outcome("error", f"timed out after {item.timeout_s:g} s, process group killed{shown}", measured)
    code = process.returncode
    if code == item.expect_exit:
        return Outcome("pass", f"exit {code} in {elapsed}{shown}", measured)
    if code is not None and code < 0:
        return Outcome("error", f"killed by signal {-code} after {elapsed}{shown}", measured)
    return Outcome("fail", f"exit {code} (expected {item.expect_exit}) in {elapsed}{shown}", measured)


class _Output:
    """The last TAIL_LINES lines of a byte stream, each redacted before it is cut."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        self.redact = redact
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._pending = b""
        self._cut = False  # the pending line lost its start

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._add(line)
        if len(self._pending) > MAX_PENDING_BYTES:  # a huge line without newline: keep its end
            self._pending = self._pending[-KEEP_PENDING_BYTES:]
            self._cut = True

    def close(self) -> None:
        if self._pending:
            self._add(self._pending)
            self._pending = b""

    def _add(self, raw: bytes) -> None:
        text = self.redact(raw.decode("utf-8", errors="replace").rstrip("\r"))
        if self._cut:  # show the end of what was kept, far from where it was cut
            self._cut = False
            text = "…" + text[-(MAX_LINE_CHARS - 1) :]
        self.tail.append(shorten(text, MAX_LINE_CHARS))


async def _collect(process: asyncio.subprocess.Process, output: _Output) -> None:
    assert process.stdout is not None
    while chunk := await process.stdout.read(READ_CHUNK):
        output.feed(chunk)
    output.close()
    await process.wait()


async def kill_process_group(process: asyncio.subprocess.Process) -> None:
    """End a process started with start_new_session=True and everything in its group.

    SIGTERM to the group, a moment's grace, then SIGKILL to whatever of it is left (a
    grandchild that ignores SIGTERM included) — always the group, even when the shell has
    already exited and only a background child is left. Then its output pipe is drained to
    EOF (closed, if something that left the group still holds it) and the process reaped:
    nothing of it survives, and no transport is left for the garbage collector to close
    after the event loop has gone ("Exception ignored … Event loop is closed")."""
    group = process.pid  # the shell leads its own group (start_new_session)
    _signal_group(group, signal.SIGTERM)
    try:
        await _drain_and_reap(process, KILL_GRACE_S)
    finally:  # cancelled meanwhile (the app is closing): no more grace, but no survivor either
        _signal_group(group, signal.SIGKILL)
    if not await _drain_and_reap(process, KILL_GRACE_S):
        transport = getattr(process, "_transport", None)  # asyncio offers no public close
        if transport is not None:
            transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), timeout=KILL_GRACE_S)


_kill_group = kill_process_group  # the name steps.py imports


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(group, signum)


async def _drain_and_reap(process: asyncio.subprocess.Process, timeout: float) -> bool:
    """Read the output pipe to EOF (discarding it) and wait for the process; False when that
    did not happen within `timeout`. The pipe must be read: a full pipe would keep a writer
    blocked, and asyncio's wait() only returns once the pipe is closed."""

    async def drain() -> None:
        if process.stdout is not None:
            while await process.stdout.read(READ_CHUNK):
                pass
        await process.wait()

    try:
        await asyncio.wait_for(drain(), timeout=timeout)
    except TimeoutError:
        return False
    return True
