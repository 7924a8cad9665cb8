"""The control room's log file: where a bug's traceback goes (the screen says a bug happened
and where to read it; the operator never sees a traceback over the control room).

Its path is `$CONTROLROOM_LOG_FILE`, else `controlroom.log` in the user log directory. Every
line passes through the environment's redaction first: no secret reaches the file.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from collections.abc import Callable
from pathlib import Path

import platformdirs

LOG_FILE_VARIABLE = "CONTROLROOM_LOG_FILE"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3
logger = logging.getLogger("controlroom")


def log_file() -> Path:
    override = os.environ.get(LOG_FILE_VARIABLE)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_log_dir("controlroom")) / "controlroom.log"


class _LogFile(logging.handlers.RotatingFileHandler):
    """Ours: replaced, not doubled, when configure() runs again."""


class _Redacting(logging.Formatter):
    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s pid=%(process)d: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


def configure(redact: Callable[[str], str]) -> Path | None:
    """Send the `controlroom` logger to the log file (0600, rotated). None when the file
    cannot be opened: then bugs are only shown, not written."""
    path = log_file()
    for handler in list(logger.handlers):
        if isinstance(handler, _LogFile):
            logger.removeHandler(handler)
            handler.close()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        os.close(descriptor)
        handler = _LogFile(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(_Redacting(redact))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return path
