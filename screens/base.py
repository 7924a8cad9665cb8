"""What every main screen shares: the status bar on top, the footer below, and how the app
hands it data (attributes down: the app calls `show_state` and `tick`)."""

from __future__ import annotations

import time

from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen

from controlroom.live.polling import PollState
from controlroom.widgets.key_bar import KeyBar
from controlroom.widgets.status_bar import StatusBar


class ControlScreen(Screen[None]):
    TITLE_TEXT = ""
    HELP = ""  # what this screen does, for the help screen

    def compose_body(self) -> ComposeResult:
        yield from ()

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield from self.compose_body()
        yield KeyBar()

    # While an action fetches what its dialog will show (a row count, the providers), keys
    # typed ahead would land on this screen ('d' of 'fudo' switches to Deploy): every key
    # binding is disabled until the dialog opens (or this long passes: a safety net).
    DIALOG_WAIT_S = 10.0
    _dialog_expected_at: float | None = None

    def expect_dialog(self) -> None:
        self._dialog_expected_at = time.monotonic()

    def dialog_opened(self) -> None:
        self._dialog_expected_at = None

    @property
    def awaiting_dialog(self) -> bool:
        since = self._dialog_expected_at
        return since is not None and time.monotonic() - since < self.DIALOG_WAIT_S

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.awaiting_dialog:
            return False  # typed ahead for a dialog that is not open yet: dropped, never run here
        return super().check_action(action, parameters)

    def on_mount(self) -> None:
        self._shown: dict[str, PollState[Any]] = {}
        self.app.configure_status(self.query_one(StatusBar), self.TITLE_TEXT)  # type: ignore[attr-defined]

    def on_screen_resume(self) -> None:
        app: Any = self.app
        for source, state in app.poll_states.items():
            self.deliver(source, state)
        self.tick(app.clock())

    def deliver(self, source: str, state: PollState[Any]) -> None:
        """Show `state` unless this screen already shows it: states are immutable, so coming
        back to a screen re-renders only what changed while it was away."""
        if self._shown.get(source) is state:
            return
        self._shown[source] = state
        self.show_state(source, state)

    def show_state(self, source: str, state: PollState[Any]) -> None:
        """A source has a new state; render it if it is one of ours."""

    def tick(self, now: float) -> None:
        """Once a second: refresh ages."""
