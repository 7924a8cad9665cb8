"""`controlroom keys`: the effective key map — every binding id, its key (the operator's own,
from the settings file, marked *), what it does and where it works."""

from __future__ import annotations

from pathlib import Path

from controlroom.config.loader import load_config


def keys_table(config_path: Path | None) -> str:
    """The table `controlroom keys` prints. With a config, the views its runbook does not
    define are left out. ConfigError when the settings (or the config) are wrong."""
    from controlroom.screens.app import OPTIONAL_VIEWS, VIEWS  # Textual: only when asked
    from controlroom.screens.keymap import checked_settings, key_rows

    hidden: list[str] = []
    if config_path is not None:
        defined = load_config(config_path).runbook.defined_views()
        hidden = [VIEWS[mode][1] for mode, view in OPTIONAL_VIEWS.items() if view not in defined]
        hidden += [mode for mode, view in OPTIONAL_VIEWS.items() if view not in defined]
    settings, keymap, source = checked_settings()
    rows = key_rows(keymap, hidden)
    state = "" if source.exists() else " (not there: the defaults)"
    lines = [f"settings: {source}{state}; theme {settings.theme or 'textual-dark'}, bell {'on' if settings.bell else 'off'}",
             "* = your key (settings.toml [keys])", ""]
    width = max(len(row[0]) for row in rows)
    key_width = max(len(row[1]) + 1 for row in rows)
    screen_width = max(len(row[3]) for row in rows)
    lines.append(f"{'ID':<{width}}  {'KEY':<{key_width}}  {'SCREEN':<{screen_width}}  DESCRIPTION")
    for binding_id, key, description, screen, mine in rows:
        lines.append(f"{binding_id:<{width}}  {key + ('*' if mine else ''):<{key_width}}  {screen:<{screen_width}}  "
                     f"{description}")
    return "\n".join(lines)
