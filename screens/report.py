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
    ReportScreen #report-path { height: auto; max-height: 3; padding: 0 1; }
    ReportScreen #report-keys { height: 1; padding: 0 1; color: $text-muted; }
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
            yield Static(self.path_text(), id="report-path")
            yield Static(Text("↑↓ pgup pgdn scroll · esc closes"), id="report-keys")
            with VerticalScroll(id="report-scroll"):
                yield Markdown(self.markdown, id="report-markdown")

    def path_text(self, width: int = 0) -> Text:
        """`written to <path>`, the whole path as plain text on that line; a path too long for
        the width is folded onto the next lines (at any character, never dropped)."""
        text = Text("written to ", style="dim")
        path = str(self.path)
        if width <= len("written to ") + 8:
            text.append(path, style="bold")
            return text
        first = width - len("written to ")
        chunks = [path[:first]] + [path[i:i + width] for i in range(first, len(path), width)]
        text.append("\n".join(chunks), style="bold")
        return text

    def on_mount(self) -> None:
        self.query_one("#report-scroll", VerticalScroll).focus()

    def on_resize(self) -> None:
        label = self.query_one("#report-path", Static)
        label.update(self.path_text(label.content_region.width or self.size.width - 4))

    def show_report(self, markdown: str) -> None:
        """Written again while shown: show the new text."""
        self.markdown = markdown
        self.query_one("#report-markdown", Markdown).update(markdown)

    def action_scroll(self, lines: int) -> None:
        scroll = self.query_one("#report-scroll", VerticalScroll)
        scroll.scroll_relative(y=lines, animate=False)

    def action_close(self) -> None:
        self.dismiss(None)
