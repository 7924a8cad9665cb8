"""A real pseudo-terminal running one command, for tests that drive the control room as an
operator's terminal does (keys in, the screen's bytes out) and that hang it up."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import psutil


class Terminal:
    """A pseudo-terminal of 80x24 running one command as its session leader."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.output = bytearray()
        self._lock = threading.Lock()
        self._hung_up = threading.Event()
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True,
            start_new_session=True,
            # The new session takes the terminal as its controlling terminal, as a login does.
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        # Waits in select, never in read: a thread blocked reading the master would keep it
        # open after os.close() until the program writes again, and the hang-up would come late.
        while not self._hung_up.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                data = os.read(self.master, 65536) if ready else None
            except OSError:
                return
            if data == b"":
                return
            if data:
                with self._lock:
                    self.output += data

    def screen_text(self) -> str:
        with self._lock:
            return self.output.decode("utf-8", errors="replace")

    def wait_for_text(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen_text():
            assert self.process.poll() is None, f"exited early with {self.process.returncode}:\n{self.screen_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{text!r} never appeared:\n{self.screen_text()[-2000:]}"
            time.sleep(0.05)

    def type(self, keys: str) -> None:
        for key in keys:
            os.write(self.master, key.encode())
            time.sleep(0.05)

    def family(self) -> list[psutil.Process]:
        """The command and everything it started (Postgres runs in its own session, but is
        still its descendant)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        except IndexError:  # psutil read the empty stat of a child being reaped: look again
            time.sleep(0.05)
            return self.family()

    def hang_up(self) -> None:
        """Close the master side, as sshd does when the connection drops: the kernel hangs up
        the terminal (SIGHUP to its session, EIO to readers) at once."""
        self._hung_up.set()
        self._reader.join(1.0)
        os.close(self.master)
