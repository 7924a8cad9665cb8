"""The exit guard: a close signal closes gracefully, a process stuck where the event loop
cannot run (the old futex hang: the main thread blocked on a full output queue) still ends
within the grace period, a second signal ends it at once, and the emergency clean-ups run
(child process groups killed, temporary directories removed)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from controlroom.infra.shutdown import GRACE_S

SCRIPT = textwrap.dedent("""
    import asyncio, os, queue, subprocess, sys, tempfile
    from controlroom.infra import shutdown

    mode, marker = sys.argv[1], sys.argv[2]

    async def main(guard):
        child = subprocess.Popen(["sleep", "120"], start_new_session=True)
        made = tempfile.mkdtemp(prefix="controlroom-guard-test-")
        shutdown.on_emergency(lambda: shutdown.kill_group(child.pid))
        shutdown.on_emergency(lambda: os.rmdir(made))
        print(child.pid, made, flush=True)
        if mode == "stuck":  # the main thread blocks in a lock: no event loop, no asyncio handler
            full = queue.Queue(1)
            full.put(None)
            full.put(None)
        try:
            await asyncio.sleep(3600)
        finally:  # the graceful path
            child.kill()
            os.rmdir(made)
            open(marker, "w").write("graceful")
        return 0

    sys.exit(shutdown.run_guarded(main))
""")


def start(mode: str, tmp_path: Path) -> tuple[subprocess.Popen[str], int, Path]:
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, mode, str(tmp_path / "marker")],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    child, made = process.stdout.readline().split()
    time.sleep(0.2)  # in its sleep (or its stuck put)
    return process, int(child), Path(made)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_a_close_signal_closes_gracefully(signum: int, tmp_path: Path) -> None:
    process, child, made = start("waiting", tmp_path)
    process.send_signal(signum)
    assert process.wait(timeout=5) == 128 + signum
    assert (tmp_path / "marker").read_text() == "graceful" and not made.exists() and gone(child)


def test_a_stuck_main_thread_still_exits_within_the_grace_period(tmp_path: Path) -> None:
    process, child, made = start("stuck", tmp_path)
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=GRACE_S + 2) == 128 + signal.SIGTERM
    elapsed = time.monotonic() - began
    assert GRACE_S - 0.5 <= elapsed <= GRACE_S + 1.5
    assert not (tmp_path / "marker").exists()  # it could not close gracefully: the emergency did
    assert not made.exists() and gone(child)


def test_a_second_signal_hurries(tmp_path: Path) -> None:
    process, child, made = start("stuck", tmp_path)
    began = time.monotonic()
    process.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=GRACE_S) == 128 + signal.SIGTERM
    assert time.monotonic() - began < GRACE_S - 1
    assert not made.exists() and gone(child)


async def test_the_deadline_thread_is_up_before_any_signal_and_hurries_after_the_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal handler must not start a thread (the interrupted main thread may hold the
    locks that takes): the deadline's thread is started with the guard and only woken."""
    import threading

    from controlroom.infra import shutdown

    hurried: list[int] = []
    monkeypatch.setattr(shutdown, "hurry", hurried.append)
    closed = asyncio.Event()
    with shutdown.exit_guard(closed.set, grace_s=0.2) as guard:
        watchers = [t for t in threading.enumerate() if t.name == "controlroom-exit-deadline" and t.is_alive()]
        assert watchers
        before = threading.active_count()
        guard._on_signal(signal.SIGTERM, None)  # as the handler is called
        assert threading.active_count() == before  # no thread started by the handler
        await asyncio.wait_for(closed.wait(), 2)
        await asyncio.sleep(0.5)
    assert hurried == [128 + signal.SIGTERM]
    with shutdown.exit_guard(closed.set, grace_s=0.1):
        pass  # uninstalled without a close: its deadline thread ends, nothing hurried
    await asyncio.sleep(0.3)
    assert hurried == [128 + signal.SIGTERM]
