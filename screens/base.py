"""What every main screen shares: the status bar on top, the footer below, how the app hands
it data (attributes down: the app calls `show_state` and `tick`), and how it talks to the
release engine (messages up: `command()` posts an EngineCommand; the answers come back as
events). A screen never decides whether a command is allowed: it asks the engine, to dim a
key (`ENGINE_COMMANDS`) and to say why."""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any, cast

from textual.app import ComposeResult
from textual.screen import Screen

from controlroom.live.polling import PollState
from controlroom.release.rules import DEPLOY, Command
from controlroom.widgets.alarm_banner import AlarmBanner
from controlroom.widgets.crew_banner import CrewBanner
from controlroom.widgets.key_bar import KeyBar
from controlroom.widgets.message_line import MessageLine
from controlroom.widgets.messages import CommandRefused, EngineCommand, ReleaseChanged
from controlroom.widgets.status_bar import StatusBar

# The terminal sizes styles/app.tcss tells apart (ControlRoomApp._size_classes sets -narrow,
# -wide and -tall on the app).
NARROW_BELOW = 80
WIDE_FROM = 120
TALL_FROM = 36

if TYPE_CHECKING:
    from controlroom.release.engine import ReleaseEngine
    from controlroom.screens.app import ControlRoomApp


class ControlScreen(Screen[None]):
    TITLE_TEXT = ""
    HELP = ""  # what this screen does, for the help screen (help_text may add the runbook's words)
    # action -> the engine command it gives: the key is dimmed while the engine refuses it
    # (it still answers, with the reason).
    ENGINE_COMMANDS: dict[str, Command] = {}
    COMMAND_SCOPE = DEPLOY

    @property
    def help_text(self) -> str:
        return self.HELP

    @property
    def room(self) -> ControlRoomApp:
        return cast("ControlRoomApp", self.app)

    @property
    def session(self) -> ReleaseEngine | None:
        """The release engine (None until its journal is open)."""
        return self.room.session

    def command(self, message: EngineCommand) -> None:
        """Give the release engine a command; its answers come back to this screen."""
        message.origin = self
        self.post_message(message)

    def refused(self, action: str) -> str | None:
        """Why the engine would refuse this action's command now (None: allowed, or not a
        command): what the key bar dims."""
        command, engine = self.ENGINE_COMMANDS.get(action), self.session
        if command is None or engine is None:
            return None
        outcome = engine.finish_outcome() if command is Command.FINISH else None
        return engine.command_refusal(command, outcome=outcome, scope=self.COMMAND_SCOPE)

    def refused_up_front(self, action: str) -> bool:
        """Before a dialog asks anything: say why the engine refuses this action's command
        now, and answer True; False when it may go ahead."""
        reason = self.refused(action)
        if reason:
            self.say_refused(reason)
        return reason is not None

    def say_refused(self, reason: str) -> None:
        self.dialog_opened()  # no dialog is coming
        self.app.notify(reason, severity="error", timeout=8)

    def show_session(self, session: ReleaseEngine) -> None:
        """The release changed: re-render what shows it."""

    def select_row(self, key: str) -> bool:
        """Put the cursor of this screen's table (its AUTO_FOCUS one) on the row `key`, as
        the arrow keys would (the `:` command line names an item or a step this way); False
        when there is no such row shown (a filtering screen clears its filter: `Filtering`)."""
        from textual.widgets import DataTable

        tables = self.query(self.AUTO_FOCUS) if self.AUTO_FOCUS else None
        table = tables.first() if tables else None
        if not isinstance(table, DataTable):
            return False
        try:
            table.move_cursor(row=table.get_row_index(key))
        except Exception:  # noqa: BLE001 - textual's RowDoesNotExist: not a row shown in this table
            return False
        return True

    def on_release_changed(self, event: ReleaseChanged) -> None:
        if self.session is not None:
            self.show_session(self.session)
        self.refresh_bindings()  # the key bar dims what the engine now refuses

    def on_command_refused(self, event: CommandRefused) -> None:
        self.dialog_opened()  # whatever was awaited will not open a dialog now

    def compose_body(self) -> ComposeResult:
        yield from ()

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield CrewBanner()
        yield AlarmBanner()
        yield from self.compose_body()
        yield MessageLine()  # the app's messages (notify), never toasts over the output
        yield KeyBar()

    # While an action fetches what its dialog will show (a row count, the providers), keys
    # typed ahead would land on this screen ('d' of 'fudo' switches to Deploy): every key
    # binding is disabled until the dialog opens (or this long passes: a safety net).
    DIALOG_WAIT_S = 10.0
    _dialog_expected_at: float | None = None

    def expect_dialog(self) -> None:
        self._dialog_expected_at = time.monotonic()

    def dialog_opened(self) -> None:
        if self._dialog_expected_at is not None:
            self.refresh_bindings()  # the keys hidden while it was awaited are back
        self._dialog_expected_at = None

    _dialog_settling = False

    def dialog_closing(self) -> None:
        """A dialog above has answered: until the screen has been drawn again (its answer
        handled, the next dialog of a chain open), keys are typed ahead and dropped."""
        self._dialog_settling = True
        self.app.call_after_refresh(self._dialog_settled)

    def _dialog_settled(self) -> None:
        self._dialog_settling = False
        # While settling, check_action hid every key of the screen: show them again (the key
        # bar was left with the screen switches alone after a dialog was cancelled).
        self.refresh_bindings()

    @property
    def awaiting_dialog(self) -> bool:
        if self._dialog_settling:
            return True
        since = self._dialog_expected_at
        return since is not None and time.monotonic() - since < self.DIALOG_WAIT_S

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.awaiting_dialog:
            return False  # typed ahead for a dialog that is not open yet: dropped, never run here
        return super().check_action(action, parameters)

    def on_mount(self) -> None:
        # Weak: a screen off show must not keep an old state alive (at 10,000 locations a
        # breaker snapshot per screen); a state gone is simply not the one on show.
        self._shown: dict[str, weakref.ref[PollState[Any]]] = {}
        self.room.configure_status(self.query_one(StatusBar), self.TITLE_TEXT)

    def on_screen_resume(self) -> None:
        room = self.room
        for source, state in room.poll_states.items():
            self.deliver(source, state)
        # The release may have moved on while another screen was shown (a watcher's driver
        # acts at any time): header and body as they are now. Unchanged cells are not redrawn.
        room.configure_status(self.query_one(StatusBar), self.TITLE_TEXT)
        if self.session is not None:
            self.show_session(self.session)
        self.tick(room.clock())

    def deliver(self, source: str, state: PollState[Any]) -> None:
        """Show `state` unless this screen already shows it: states are immutable, so coming
        back to a screen re-renders only what changed while it was away."""
        shown = self._shown.get(source)
        if shown is not None and shown() is state:
            return
        self._shown[source] = weakref.ref(state)
        self.show_state(source, state)

    def show_state(self, source: str, state: PollState[Any]) -> None:
        """A source has a new state; render it if it is one of ours."""

    def tick(self, now: float) -> None:
        """Once a second: refresh ages."""
