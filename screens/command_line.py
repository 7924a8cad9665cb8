"""The `:` command line as a screen over the view: keys typed after `:` go to it (rule 6),
esc closes it, enter parses the line and answers the Parsed command, which the app runs as
the command's own key would (controlroom.screens.app, `run_command`)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen

from controlroom.release.command_line import CommandLineError, Names, Parsed, parse
from controlroom.widgets.command_line import CommandLine


class CommandLineScreen(ModalScreen[Parsed | None]):
    DEFAULT_CSS = """
    CommandLineScreen { background: transparent; }
    """
    BINDINGS = [Binding("escape", "close", "Close", id="command_line.close")]

    def __init__(self, names: Names) -> None:
        super().__init__()
        self.names = names
        self._answered = False

    def compose(self) -> ComposeResult:
        yield CommandLine(self.names, id="command-line")

    def on_command_line_submitted(self, event: CommandLine.Submitted) -> None:
        try:
            parsed = parse(event.line, self.names)
        except CommandLineError as error:
            self.query_one(CommandLine).show_error(str(error))
            return
        self._answer(parsed)

    def action_close(self) -> None:
        self._answer(None)

    def _answer(self, parsed: Parsed | None) -> None:
        """Once: an enter (or esc) typed fast after the first lands here before the screen is
        gone, and a second dismiss would pop the view under it."""
        if not self._answered:
            self._answered = True
            self.dismiss(parsed)
