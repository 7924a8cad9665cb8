"""A watchdog that cleans up after a sandbox whose owner died without stopping it.

A process killed with SIGKILL runs no cleanup, and PostgreSQL does not notice that the
process that started it is gone. So each sandbox part that would outlive its owner gets a
reaper: a small process that polls its owner's pid and, once the owner is gone, kills the
given process groups and removes the given directories. A clean stop ends the reaper first.

    python -m controlroom.sandbox.pg.reaper --owner PID [--kill-group PGID ...] [--remove DIR ...]
                                         [--as-user NAME]

With --as-user (given by root for the embedded Postgres), it gives up root before it waits:
that user's uid, its own group and no supplementary groups, which is all it needs to stop
that user's server and remove that user's directory. (Python itself may sit below a private
directory, so the reaper starts as root and drops privileges rather than being started as
the user.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5


def spawn_reaper(*, kill_groups: list[int], remove: list[Path], as_user: str | None = None) -> subprocess.Popen[bytes]:
    """Start a reaper for the current process."""
    command = [sys.executable, "-m", "controlroom.sandbox.pg.reaper", "--owner", str(os.getpid())]
    if as_user is not None:
        command += ["--as-user", as_user]
    for group in kill_groups:
        command += ["--kill-group", str(group)]
    for path in remove:
        command += ["--remove", str(path)]
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for the owner must not reach it
    )


def stop_reaper(reaper: subprocess.Popen[bytes] | None) -> None:
    if reaper is None or reaper.poll() is not None:
        return
    reaper.terminate()
    try:
        reaper.wait(timeout=5)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait(timeout=5)


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(groups: list[int], paths: list[str]) -> None:
    for group in groups:
        for signum in (signal.SIGINT, signal.SIGKILL):  # fast shutdown first, then no mercy
            try:
                os.killpg(group, signum)
            except ProcessLookupError:
                break
            time.sleep(1.0)
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _become(name: str) -> None:
    import pwd

    entry = pwd.getpwnam(name)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.chdir("/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlroom.sandbox.pg.reaper")
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--kill-group", type=int, action="append", default=[])
    parser.add_argument("--remove", action="append", default=[])
    parser.add_argument("--as-user")
    args = parser.parse_args(argv)
    if args.as_user:
        _become(args.as_user)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the owner stopped cleanly
    while process_alive(args.owner) and Path(f"/proc/{args.owner}").exists():
        time.sleep(POLL_S)
    _reap(args.kill_group, args.remove)
    return 0


if __name__ == "__main__":
    sys.exit(main())
