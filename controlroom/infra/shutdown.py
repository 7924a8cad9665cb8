"""Leaving on time: every `controlroom` process exits within seconds of a close signal or of
losing its terminal, in whatever state it is, and leaves no child process behind.

    async def main():
        with exit_guard() as guard:          # SIGHUP/SIGTERM/SIGINT now close this task
            guard.graceful = app.exit        # ... or close the app the way `q` does
            ...

The first SIGHUP, SIGTERM or SIGINT (or the terminal driver reporting the terminal gone)
runs the *graceful* action: by default the task that entered the guard is cancelled, so its
`finally` blocks stop what it started. A deadline thread then makes sure the process is gone
within GRACE_S; a second signal during that time hurries it at once. Hurrying runs the
*emergency clean-ups* registered by whatever started children or made temporary
directories (kill the process groups, remove the directories) and ends the process with
`os._exit`.

Why a thread and `signal.signal`, not `loop.add_signal_handler`: asyncio's handlers run only
while the event loop runs. A main thread blocked in a lock (a full output queue to a dead
terminal, a thread join at interpreter shutdown) never gets back to the loop, so such a
process would ignore SIGTERM forever. Python-level handlers still run in a lock wait, and the
deadline thread needs nothing of the main thread at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import NoReturn

GRACE_S = 3.0  # graceful close, then the emergency exit; the whole stays well inside 5 s
CLOSE_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)

# Re-entrant: a signal handler runs on the main thread, which may be holding it just then.
_lock = threading.RLock()
_cleanups: dict[int, Callable[[], None]] = {}
_tokens = itertools.count(1)
_current: "ExitGuard | None" = None


def on_emergency(cleanup: Callable[[], None]) -> int:
    """Register a quick, synchronous clean-up for an emergency exit; returns its token."""
    token = next(_tokens)
    with _lock:
        _cleanups[token] = cleanup
    return token


def discard(token: int | None) -> None:
    """The thing is stopped the normal way: its emergency clean-up is no longer needed."""
    if token is not None:
        with _lock:
            _cleanups.pop(token, None)


def kill_group(pgid: int) -> None:
    """SIGKILL a process group, if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def emergency(cleanup: Callable[[], None]) -> Iterator[None]:
    """`cleanup` is registered while the block runs."""
    token = on_emergency(cleanup)
    try:
        yield
    finally:
        discard(token)


def hurry(exit_code: int) -> NoReturn:
    """Run every emergency clean-up (newest first) and leave at once."""
    with _lock:
        cleanups = list(_cleanups.values())[::-1]
        _cleanups.clear()
    for cleanup in cleanups:
        with contextlib.suppress(BaseException):
            cleanup()
    os._exit(exit_code)


def terminal_lost() -> None:
    """The terminal is gone (read EOF or EIO, or a write failed): close as on SIGHUP.
    Safe from any thread."""
    guard = _current
    if guard is not None:
        guard.close(128 + signal.SIGHUP)


class ExitGuard:
    """Turns close signals into a graceful close with a deadline, then an emergency exit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, graceful: Callable[[], object], grace_s: float = GRACE_S) -> None:
        self.loop = loop
        self.graceful = graceful
        self.grace_s = grace_s
        self.exit_code: int | None = None  # 128 + the signal, once closing
        self._closing = False
        # The deadline thread blocks reading this pipe; closing writes a byte to it. os.write
        # is safe in a signal handler; threading.Event.set and Thread.start take locks the
        # interrupted main thread may hold.
        self._wake_read, self._wake_write = os.pipe()
        self._previous: dict[int, object] = {}

    @property
    def closing(self) -> bool:
        return self._closing

    def install(self) -> None:
        # The deadline's thread is started now, not in the signal handler (see __init__).
        watchdog = threading.Thread(target=self._deadline, name="controlroom-exit-deadline", daemon=True)
        watchdog.start()
        for signum in CLOSE_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _deadline(self) -> None:
        try:
            woken = os.read(self._wake_read, 1)
        except OSError:
            woken = b""
        finally:
            os.close(self._wake_read)
        if not woken:  # uninstalled without a close: nothing to hurry
            return
        time.sleep(self.grace_s)
        hurry(self.exit_code if self.exit_code is not None else 1)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if not self._closing:  # the deadline thread reads EOF and ends; once closing, it stays armed
            with contextlib.suppress(OSError):
                os.close(self._wake_write)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.closing:  # asked again: no more patience
            hurry(128 + signum)
        self.close(128 + signum)

    def close(self, exit_code: int) -> None:
        """Begin the graceful close (once) and arm the deadline. Safe from any thread."""
        with _lock:  # re-entrant: a signal may arrive while this thread holds it
            if self._closing:
                return
            self.exit_code = exit_code
            self._closing = True
            with contextlib.suppress(OSError):
                os.write(self._wake_write, b"!")  # the deadline thread wakes: grace_s from now, hurry()
        with contextlib.suppress(RuntimeError):  # the loop is closed: the deadline will do
            self.loop.call_soon_threadsafe(self._run_graceful)

    def _run_graceful(self) -> None:
        try:
            self.graceful()
        except Exception:  # noqa: BLE001 - the deadline still ends the process
            pass


@contextlib.contextmanager
def exit_guard(graceful: Callable[[], object] | None = None, *, grace_s: float = GRACE_S) -> Iterator[ExitGuard]:
    """Install the guard for the running event loop; by default a close signal cancels the
    task that entered it. Only one guard at a time (the outermost command's)."""
    global _current
    loop = asyncio.get_running_loop()
    if graceful is None:
        task = asyncio.current_task()
        assert task is not None, "exit_guard() needs a running task"
        graceful = task.cancel
    guard = ExitGuard(loop, graceful, grace_s)
    guard.install()
    previous, _current = _current, guard
    try:
        yield guard
    finally:
        _current = previous
        guard.uninstall()


def run_guarded(main: Callable[[ExitGuard], Awaitable[int | None]]) -> int | None:
    """`asyncio.run(main(guard))` under the exit guard. Returns what `main` returned, or
    128 + N when signal N (or the terminal's loss, as SIGHUP) closed it."""
    result: int | None = None

    async def body() -> None:
        nonlocal result
        with exit_guard() as guard:
            try:
                result = await main(guard)
            except asyncio.CancelledError:
                if not guard.closing:
                    raise
            if guard.closing:
                result = guard.exit_code

    try:
        asyncio.run(body())
    except KeyboardInterrupt:  # a Ctrl-C before the guard was up
        return 128 + signal.SIGINT
    return result
