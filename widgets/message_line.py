"""The message line: one line just above the key bar (and at the same place over a dialog)
where transient messages go — refusals, "Deployment of x started", a step's outcome — instead
of toasts that would cover the step output.

The newest message replaces the one before; it is coloured by severity and cleared after its
timeout, except an error, which stays until the next message or a key. The text is always
shown as it is: a version typed as `[bold red]x` is never read as markup. The app decides
what is shown (ControlRoomApp.notify); every line shows the same message.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from controlroom.live.sources import plain

SEVERITY_STYLES = {
    "information": "bold",
    "warning": "bold black on yellow",
    "error": "bold white on red",
}


@dataclass(frozen=True)
class Notice:
    text: str
    severity: str = "information"
    title: str = ""

    def render(self) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        words = " · ".join(part.strip() for part in self.text.splitlines() if part.strip())
        label = f"{self.title}: {words}" if self.title else words
        style = SEVERITY_STYLES.get(self.severity, "bold")
        line.append(f" {plain(label, limit=500)} ", style=style)
        return line


class MessageLine(Static):
    DEFAULT_CSS = """
    MessageLine { height: 1; width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self) -> None:
        super().__init__("", id="message-line")
        self.message: Notice | None = None

    def on_mount(self) -> None:
        self.show_message(getattr(self.app, "message", None))  # what the app shows now

    def show_message(self, message: Notice | None) -> None:
        if message == self.message:
            return
        self.message = message
        self.update(message.render() if message is not None else Text(""))
