"""The key hints at the bottom of every main screen, as one line of text.

Textual's Footer builds a widget per key and rebuilds them all whenever the bindings change,
which made every screen switch cost a few hundred milliseconds; an operator switches screens
all the time, and reads the keys, never clicks them. Shown keys come first in binding order;
what does not fit in the width is cut, and `?` lists them all.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Static
from rich.text import Text


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $panel;
        color: $text;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.show_keys()

    def _bindings_changed(self, screen: Screen[object]) -> None:
        if self.is_attached and screen is self.screen:
            self.show_keys()

    def show_keys(self) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        actions: set[str] = set()
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in actions:
                continue
            actions.add(binding.action)
            style = "bold reverse" if enabled else "dim reverse"
            text.append(f" {self.app.get_key_display(binding)} ", style=style)
            text.append(f"{binding.description} ", style="" if enabled else "dim")
        self.update(text)
