"""The loud line under the header when a shared release needs the operator's eyes: the shared
journal is unreachable, or nobody drives it. Hidden otherwise: the header says who drives."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from controlroom.live.sources import plain

class CrewBanner(Static):
    DEFAULT_CSS = """
    CrewBanner { height: auto; max-height: 2; width: 1fr; display: none; padding: 0 1; text-style: bold; }
    CrewBanner.-offline { display: block; background: red; color: white; }
    CrewBanner.-nobody { display: block; background: yellow; color: black; }
    """

    LEVELS: tuple[str, ...] = ("offline", "nobody")  # each a CSS class -LEVEL
    shown_text: str = ""  # what the banner says now ("" while hidden), for tests and the curious

    def show_banner(self, text: str, level: str = "offline") -> None:
        """Show `text` (plain, from data: never markup) at `level`; "" hides the banner."""
        level = level if text else ""
        if text == self.shown_text and all(self.has_class(f"-{name}") == (name == level) for name in self.LEVELS):
            return  # unchanged: nothing to redraw
        self.shown_text = text
        for name in self.LEVELS:
            self.set_class(name == level, f"-{name}")
        self.update(Text(plain(text, limit=300)))
