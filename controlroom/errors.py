"""Errors the CLI turns into one clear line and an exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path


class ControlRoomError(Exception):
    """An error meant for the operator: its message is the whole story."""

    exit_code = 1


class ConfigError(ControlRoomError):
    """A config or runbook file is missing, unreadable or invalid (exit code 2)."""

    exit_code = 2

    def __init__(self, path: Path | str, key: str | None, message: str) -> None:
        self.path, self.key, self.message = str(path), key, message
        where = f"{self.path}: {key}" if key else self.path
        super().__init__(f"{where}: {message}")


class SessionError(ControlRoomError):
    """A command the release session refuses: the message says why, for the operator."""

    exit_code = 2
