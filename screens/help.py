"""Help (`?`): every key that works here, and what the current screen does."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from controlroom.live.polling import STALE_INTERVALS


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 76; max-width: 100%; max-height: 90%; border: round $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close", id="help.close"),
    ]

    def __init__(self, title: str, about: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.about = about
        self.keys = keys

    def compose(self) -> ComposeResult:
        text = Text()
        text.append(f"{self.title_text}\n", style="bold")
        if self.about:
            text.append(self.about + "\n")
        text.append("\nKeys\n", style="bold")
        for key, description in self.keys:
            text.append(f"  {key:<14}", style="bold cyan")
            text.append(f"{description}\n")
        text.append("\nThe header\n", style="bold")
        text.append("  N stale", style="bold yellow")
        text.append("  N data sources whose last poll failed or whose last value is too old "
                    f"(older than {STALE_INTERVALS:g} poll intervals); the KPIs, POS and Breakers screens show "
                    "which and why.\n")
        text.append("  YOU DRIVE", style="bold black on green")
        text.append(" / ")
        text.append("WATCHING alice@bastion-2", style="bold white on magenta")
        text.append("  a release shared by several control rooms ([journal] store = \"postgres\"): the one that "
                    "drives decides, the others watch it live and are refused every decision. ")
        text.append("NO DRIVER", style="bold black on yellow")
        text.append(": the driver's control room is gone, T takes over. ")
        text.append("JOURNAL OFFLINE", style="bold white on red")
        text.append(": the shared journal is unreachable; the driver continues only after typing so (T).\n")
        text.append("\n  esc / ? / q  close this help", style="dim")
        with VerticalScroll():
            yield Static(text)

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
