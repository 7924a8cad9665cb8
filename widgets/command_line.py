"""The `:` command line (k9s style): one line at the bottom, over the key bar, with the
candidates (or a one-line error) above it. Tab completes the word being typed from the
runbook's names (`controlroom.release.command_line.complete`); enter posts what was typed;
what it means and whether it is allowed are decided elsewhere (the screen parses, the app
runs the command's key action, the engine decides)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Static

from controlroom.release.command_line import Names, complete

SHOWN_CANDIDATES = 12


class CommandInput(Input):
    """The line itself: tab completes instead of moving the focus."""

    BINDINGS = [Binding("tab", "complete", "complete", show=False)]

    class TabPressed(Message):
        pass

    def action_complete(self) -> None:
        self.post_message(self.TabPressed())


class CommandLine(Vertical):
    DEFAULT_CSS = """
    CommandLine { dock: bottom; height: auto; background: $panel; }
    CommandLine #command-hint { height: auto; max-height: 2; padding: 0 1; color: $text-muted; }
    CommandLine #command-hint.-error { color: $error; }
    CommandLine #command-row { height: 1; }
    CommandLine #command-prompt { width: 1; text-style: bold; }
    CommandLine CommandInput { border: none; height: 1; width: 1fr; padding: 0 0; background: $panel; }
    CommandLine CommandInput:focus { border: none; }
    """

    class Submitted(Message):
        def __init__(self, line: str) -> None:
            super().__init__()
            self.line = line

    def __init__(self, names: Names, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.names = names
        self.candidates: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static(Text("Tab completes · enter runs · esc closes", style="dim"), id="command-hint")
        with Horizontal(id="command-row"):
            yield Static(":", id="command-prompt")  # the colon typed, as k9s shows it
            yield CommandInput(placeholder="rollback, attest ITEM-ID, skip STEP-ID REASON, q …",
                               id="command-input", select_on_focus=False)

    def on_mount(self) -> None:
        self.query_one(CommandInput).focus()

    @property
    def value(self) -> str:
        return self.query_one(CommandInput).value

    def show_error(self, message: str) -> None:
        """A line that names nothing: said here, in one line, and the line stays to be fixed."""
        hint = self.query_one("#command-hint", Static)
        hint.update(Text(message))  # data (a typed word): shown as text, never markup
        hint.add_class("-error")

    def on_command_input_tab_pressed(self, event: CommandInput.TabPressed) -> None:
        field = self.query_one(CommandInput)
        done = complete(field.value, self.names)
        self.candidates = done.candidates
        field.value = done.line
        field.cursor_position = len(field.value)
        hint = self.query_one("#command-hint", Static)
        hint.remove_class("-error")
        if not done.candidates:
            hint.update(Text("nothing to complete here", style="dim"))
            return
        shown = "  ".join(done.candidates[:SHOWN_CANDIDATES])
        more = f"  (+{len(done.candidates) - SHOWN_CANDIDATES} more)" if len(done.candidates) > SHOWN_CANDIDATES else ""
        hint.update(Text(shown + more))

    def on_input_changed(self, event: Input.Changed) -> None:
        hint = self.query_one("#command-hint", Static)
        if hint.has_class("-error"):
            hint.remove_class("-error")
            hint.update(Text("Tab completes · enter runs · esc closes", style="dim"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(event.value))
