"""The post-deployment report (ctrl+r): written next to the journal, shown here as Markdown,
scrollable with the keyboard; esc closes."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown, Static


class ReportScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    ReportScreen { align: center middle; }
    ReportScreen > Vertical { width: 100%; height: 100%; border: round $accent; background: $surface; }
    ReportScreen #report-path { height: 1; padding: 0 1; color: $text-muted; }
    ReportScreen VerticalScroll { height: 1fr; }
    ReportScreen Markdown { margin: 0 1; }
    """
    BINDINGS = [
        Binding("escape,q", "close", "Close", id="report.close"),
        Binding("up,k", "scroll(-1)", "Up", show=False),
        Binding("down,j", "scroll(1)", "Down", show=False),
        Binding("pageup", "scroll(-15)", "Page up", show=False),
        Binding("pagedown,space", "scroll(15)", "Page down", show=False),
    ]

    def __init__(self, path: Path, markdown: str) -> None:
        super().__init__()
        self.path = path
        self.markdown = markdown

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(f"written to {self.path}  ·  ↑↓ pgup pgdn scroll · esc closes", no_wrap=True,
                              overflow="ellipsis"), id="report-path")
            with VerticalScroll(id="report-scroll"):
                yield Markdown(self.markdown, id="report-markdown")

    def on_mount(self) -> None:
        self.query_one("#report-scroll", VerticalScroll).focus()

    def action_scroll(self, lines: int) -> None:
        scroll = self.query_one("#report-scroll", VerticalScroll)
        scroll.scroll_relative(y=lines, animate=False)

    def action_close(self) -> None:
        self.dismiss(None)
