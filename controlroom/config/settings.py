"""Personal settings: the operator's keys, theme and bell, not the runbook's.

    # ~/.config/controlroom/settings.toml (or the file $CONTROLROOM_SETTINGS names)
    theme = "ansi-dark"          # any Textual theme; the ansi-* ones follow the terminal's palette
    bell = false                 # default true: a failed step, notification, NO-GO, escalation
    [keys]
    "view.deploy" = "D"          # binding id = key (`controlroom keys` lists them)
    "checklist.attest" = "m"

Parsed and checked here, without Textual: the UI hands `check_settings` what it knows (the
bindings, the themes, how it spells a key) and applies the result.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from controlroom.errors import ConfigError

SETTINGS_VARIABLE = "CONTROLROOM_SETTINGS"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: dict[str, str] = Field(default_factory=dict)
    theme: str | None = None
    bell: StrictBool = True


@dataclass(frozen=True)
class KeyBinding:
    """A key of the control room, as the UI declares it: `scope` is where it is defined (the
    app, or a screen's title); `id` None for the few keys that cannot be remapped."""

    id: str | None
    keys: tuple[str, ...]
    description: str
    scope: str

    def name(self) -> str:
        return self.id or self.description


def settings_path() -> tuple[Path, bool]:
    """The settings file, and whether it was named explicitly ($CONTROLROOM_SETTINGS)."""
    named = os.environ.get(SETTINGS_VARIABLE)
    if named:
        return Path(named).expanduser(), True
    return Path(platformdirs.user_config_dir("controlroom")) / "settings.toml", False


def load_settings(path: Path | None = None) -> tuple[Settings, Path]:
    """The settings and where they came from. The default file may be absent (defaults); a
    file named explicitly must exist. ConfigError (exit 2) on anything wrong in it."""
    from controlroom.config.loader import _parse

    explicit = path is not None
    if path is None:
        path, explicit = settings_path()
    if not explicit and not path.exists():
        return Settings(), path
    return _parse(path, Settings), path


def check_settings(
    settings: Settings,
    path: Path,
    bindings: Iterable[KeyBinding],
    together: Iterable[Collection[str]],
    themes: Collection[str],
    normalize: Callable[[str], str],
) -> dict[str, str]:
    """The keymap to apply (binding id → normalized keys), or ConfigError naming the first
    problem: an unknown id or theme, an empty key, or a key two bindings would share where
    they are active together (`together`: the sets of scopes active at once), when one of
    the two is the operator's remapping (the defaults' own overrides are by design)."""
    bindings = list(bindings)
    if settings.theme is not None and settings.theme not in themes:
        raise ConfigError(path, "theme", f"unknown theme {settings.theme!r}; choose one of: {', '.join(sorted(themes))}")
    known = {b.id for b in bindings if b.id}
    keymap: dict[str, str] = {}
    for binding_id, keys in settings.keys.items():
        where = f'keys."{binding_id}"'
        if binding_id not in known:
            close = difflib.get_close_matches(binding_id, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (`controlroom keys` lists them)"
            raise ConfigError(path, where, f"unknown binding id {binding_id!r}{hint}")
        parts = [key.strip() for key in keys.split(",")]
        if not all(parts) or any(" " in key for key in parts):
            raise ConfigError(path, where, f"{keys!r} is not a key; write e.g. \"m\", \"ctrl+r\", \"f5\" or \"?\"")
        keymap[binding_id] = ",".join(normalize(key) for key in parts)
    effective = effective_keys(bindings, keymap)
    for scopes in together:
        holders: dict[str, list[KeyBinding]] = {}
        for binding in bindings:
            if binding.scope in scopes:
                for key in effective[binding]:
                    if all(other.name() != binding.name() for other in holders.get(key, [])):
                        holders.setdefault(key, []).append(binding)
        for key, sharing in holders.items():
            remapped = [b for b in sharing if b.id in keymap]
            if len(sharing) > 1 and remapped:
                mine = remapped[0]
                other = next(b for b in sharing if b is not mine)
                screen = next((s for s in sorted(scopes) if s != "app"), "app")
                raise ConfigError(path, f'keys."{mine.id}"', f"{key!r} is already {other.name()!r} on the "
                                  f"{screen} screen: two keys cannot share it")
    return keymap


def effective_keys(bindings: Iterable[KeyBinding], keymap: Mapping[str, str]) -> dict[KeyBinding, tuple[str, ...]]:
    """Each binding's keys once the keymap is applied."""
    return {b: tuple(keymap[b.id].split(",")) if b.id in keymap else b.keys for b in bindings}
