"""Textual's Linux driver, made safe for a terminal that goes away (an SSH drop, a killed
tmux session).

Textual writes to the terminal from a writer thread fed by a queue of 30 writes. When the
terminal is gone, a write raises EIO and kills that thread; the next 30 writes fill the
queue and the 31st blocks the main thread for ever in `Queue.put` (a futex wait), so the
app can neither exit nor run its signal handlers. Meanwhile the input thread reads EOF in a
loop and spins. This driver keeps both threads alive and tells the exit guard
(`controlroom.infra.shutdown`) that the terminal is lost, which closes the app as SIGHUP
does: output to a lost terminal is dropped, never queued without end.
"""

from __future__ import annotations

import errno
import os
import selectors
from codecs import getincrementaldecoder
from typing import IO, Any

from textual._loop import loop_last
from textual._xterm_parser import XTermParser
from textual.drivers.linux_driver import LinuxDriver

from controlroom.infra import shutdown

# The errors a read or write on a terminal that has hung up gives.
LOST = (errno.EIO, errno.ENXIO, errno.EBADF, errno.EPIPE, errno.ENOTTY)


class TerminalOutput:
    """The terminal's output stream for Textual's writer thread: once a write fails, the
    terminal is lost and every later write is dropped."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self.lost = False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self._file.write(text)
            except (OSError, ValueError):  # EIO; ValueError: the stream was closed
                self._lose()
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._file.flush()
            except (OSError, ValueError):
                self._lose()

    def fileno(self) -> int:
        return self._file.fileno()

    def isatty(self) -> bool:
        return self._file.isatty()

    def _lose(self) -> None:
        self.lost = True
        shutdown.terminal_lost()


class TerminalDriver(LinuxDriver):
    """LinuxDriver whose writer never blocks on a lost terminal and whose input thread ends
    on the terminal's hang-up instead of spinning."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._file = TerminalOutput(self._file)  # type: ignore[arg-type]

    def run_input_thread(self) -> None:
        """LinuxDriver.run_input_thread (Textual 8.2), except that end of file or EIO on a
        terminal is its hang-up: report it and stop reading."""
        selector = selectors.SelectSelector()
        selector.register(self.fileno, selectors.EVENT_READ)
        fileno = self.fileno
        parser = XTermParser(self._debug)
        decode = getincrementaldecoder("utf-8")().decode
        hung_up = False

        def read_events(events: list[tuple[selectors.SelectorKey, int]], final: bool = False) -> None:
            nonlocal hung_up
            for last, (_key, mask) in loop_last(events):
                if not mask & selectors.EVENT_READ:
                    continue
                try:
                    data = os.read(fileno, 1024 * 4)
                except OSError as error:
                    if error.errno not in LOST:
                        raise
                    data = b""
                if not data:
                    if self.input_tty:  # a terminal that reads end of file has hung up
                        hung_up = True
                    break
                for event in parser.feed(decode(data, final=final and last)):
                    self.process_message(event)
            for event in parser.tick():
                self.process_message(event)

        try:
            while not self.exit_event.is_set() and not hung_up:
                read_events(selector.select(0.1))
            if not hung_up:
                selector.unregister(self.fileno)
                read_events(selector.select(0.1), final=True)
        finally:
            selector.close()
            try:
                for _event in parser.feed(""):
                    pass
            except Exception:  # noqa: BLE001 - a half-read escape sequence at the end
                pass
        if hung_up:
            shutdown.terminal_lost()
