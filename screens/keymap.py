"""The control room's keys as data, for the personal settings (controlroom.config.settings):
which bindings exist where, which are active together, the themes, and how Textual spells a
key. `checked_settings()` loads and checks the settings file (ConfigError, exit 2);
`key_rows()` is what `controlroom keys` prints."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.binding import Binding
from textual.keys import _character_to_key, format_key
from textual.theme import BUILTIN_THEMES

from controlroom.config.settings import KeyBinding, Settings, check_settings, effective_keys, load_settings

APP = "app"
# Keys the focused table or list takes before any screen binding sees them.
TABLE_KEYS = KeyBinding(None, ("up", "down", "pageup", "pagedown", "home", "end", "tab", "shift+tab"),
                        "moving in tables and lists", "tables")


def _screens() -> list[tuple[str, type[Any], bool]]:
    """(scope, screen class, a main view: the app's keys are active with it)."""
    from controlroom.screens.app import VIEWS
    from controlroom.screens.dialogs import ConfirmDialog, PickDialog, ReasonDialog, TypedConfirmDialog
    from controlroom.screens.help import HelpScreen
    from controlroom.screens.kpi_detail import KpiDetailScreen
    from controlroom.screens.report import ReportScreen

    views = [(title, screen, True) for _, title, screen in VIEWS.values()]
    dialogs = [("dialog", dialog, False) for dialog in (ConfirmDialog, ReasonDialog, TypedConfirmDialog, PickDialog)]
    return [*views, ("KPI detail", KpiDetailScreen, True), ("Help", HelpScreen, False), ("Report", ReportScreen, False), *dialogs]


def _declared(cls: type[Any], scope: str) -> list[KeyBinding]:
    found = []
    for binding in cls.BINDINGS:
        assert isinstance(binding, Binding)
        description = binding.tooltip or binding.description or binding.action
        keys = tuple(key.strip() for key in binding.key.split(","))
        found.append(KeyBinding(binding.id, keys, description, scope))
    return found


def all_bindings() -> list[KeyBinding]:
    from controlroom.screens.app import ControlRoomApp

    bindings = [*_declared(ControlRoomApp, APP), TABLE_KEYS]
    for scope, screen, _ in _screens():
        bindings += [b for b in _declared(screen, scope) if b not in bindings]
    return bindings


def active_together() -> list[frozenset[str]]:
    return [frozenset({APP, scope, TABLE_KEYS.scope} if main else {scope}) for scope, _, main in _screens()]


def normalize_key(key: str) -> str:
    return _character_to_key(key) if len(key) == 1 else key


def checked_settings(path: Path | None = None) -> tuple[Settings, dict[str, str], Path]:
    """The settings, the keymap to apply, the file they came from; ConfigError when wrong."""
    settings, source = load_settings(path)
    themes = set(BUILTIN_THEMES)  # the app registers none of its own
    # The bindings are only read to check remapped keys; collecting them imports every screen
    # (the report's markdown among them: ~30 ms before the first frame), so a file that remaps
    # nothing (or none at all) skips it: without a remapping there is nothing to clash.
    bindings, together = (all_bindings(), active_together()) if settings.keys else ([], [])
    keymap = check_settings(settings, source, bindings, together, themes, normalize_key)
    return settings, keymap, source


def key_rows(keymap: dict[str, str], hidden_scopes: Iterable[str] = ()) -> list[tuple[str, str, str, str, bool]]:
    """(binding id, keys as shown, description, screen, remapped) for every remappable key."""
    hidden = set(hidden_scopes)
    rows = []
    for binding, keys in effective_keys(all_bindings(), keymap).items():
        if binding.id is None or binding.scope in hidden or binding.id.removeprefix("view.") in hidden:
            continue
        shown = " ".join(format_key(key) for key in keys)
        rows.append((binding.id, shown, binding.description, "every screen" if binding.scope == APP else binding.scope,
                     binding.id in keymap))
    return rows
