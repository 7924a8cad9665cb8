"""Secrets: looked up by logical name in environment variables, and scrubbed from any text
that leaves the process (screen, journal, report, JSON)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values

from controlroom.errors import ControlRoomError

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words
# user:password@ in a URL, for URLs urlsplit refuses (e.g. a password with '[').
_USERINFO_PASSWORD = re.compile(r"://[^:/@]*:([^@]*)@")


class MissingSecret(ControlRoomError):
    exit_code = 2


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (dotenv syntax). Raises OSError when the file cannot be read."""
    with open(path, encoding="utf-8") as handle:  # dotenv_values hides a missing file
        values = dotenv_values(stream=handle)
    return {key: value for key, value in values.items() if value is not None}


class SecretStore:
    """Logical secret name -> value, read from the environment (or an env file)."""

    def __init__(self, names: Mapping[str, str], environ: Mapping[str, str], file_values: Mapping[str, str]) -> None:
        self._names = dict(names)  # logical -> environment variable name
        self._values: dict[str, str] = {}
        for logical, variable in self._names.items():
            value = environ.get(variable) or file_values.get(variable)
            if value:
                self._values[logical] = value
        self._scrub = sorted(_fragments(self._values.values()), key=len, reverse=True)

    def variable(self, logical: str) -> str:
        return self._names[logical]

    def has(self, logical: str) -> bool:
        return logical in self._values

    def get(self, logical: str) -> str:
        try:
            return self._values[logical]
        except KeyError:
            variable = self._names.get(logical, "?")
            raise MissingSecret(f"secret {logical!r} is not set: export {variable}=...") from None

    def redact(self, text: str) -> str:
        for fragment in self._scrub:
            text = text.replace(fragment, REDACTED)
        return text


def _fragments(values: object) -> set[str]:
    """Each secret, plus the password inside any URL-shaped secret (a DSN, a webhook URL)."""
    found: set[str] = set()
    for value in values:  # type: ignore[attr-defined]
        found.add(value)
        if "://" in value:
            try:
                parts = urlsplit(value)
                password, path = parts.password, parts.path
            except ValueError:  # not a URL urlsplit accepts; still find the password
                match = _USERINFO_PASSWORD.search(value)
                password, path = (match.group(1) if match else None), ""
            if password:
                found.update({password, unquote(password)})
            if path and len(path) > 8:  # webhook URLs carry their secret in the path
                found.add(path)
    return {fragment for fragment in found if len(fragment) >= MIN_SECRET_LENGTH}
