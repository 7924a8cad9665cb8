"""Dialogs: confirm (Cancel is the default), typed reason, typed confirmation word.

All text from data is passed as rich Text (or plain str rendered as Text), never markup.
Every dialog closes with esc as Cancel (ConfirmDialog: its cancel button, whatever it is
named). Results: ConfirmDialog → bool, ReasonDialog → str | None (the typed text),
TypedConfirmDialog → bool.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from controlroom.widgets.message_line import MessageLine
from controlroom.widgets.status_bar import StatusBar

DIALOG_CSS = """
{name} { align: center middle; }
{name} > Vertical { width: 76; max-width: 100%; height: auto; max-height: 22; border: round $warning;
                    background: $surface; padding: 0 1; }
{name} .dialog-title { text-style: bold; width: 1fr; }
{name} .dialog-body { height: auto; max-height: 12; }
{name} .dialog-hint { color: $text-muted; }
{name} Input { margin: 0; }
{name} .dialog-buttons { height: 3; align-horizontal: right; }
{name} Button { margin-left: 1; min-width: 10; }
{name} .dialog-error { color: $error; height: auto; }
{name} > StatusBar { dock: top; }
{name} > MessageLine { dock: bottom; margin-bottom: 1; }
"""


def _text(value: str | Text) -> Text:
    return value if isinstance(value, Text) else Text(value)


class DialogStatusBar(StatusBar):
    """The header over a dialog: the same line as the screen's below, kept ticking by the app
    (ControlRoomApp._status_bars), so the verdict and the clocks stay in view and move while
    the dialog is open, whatever it covers."""

    def on_mount(self) -> None:
        room: Any = self.app
        if hasattr(room, "configure_status"):
            below = room.shown_screen()
            room.configure_status(self, getattr(below, "TITLE_TEXT", ""))


class Dialog(ModalScreen[Any]):
    """A dialog answers once. A second Enter, or a key typed ahead that reaches it while it
    closes, must not answer again (Textual would pop the screen below it).

    Every dialog shows the header (the clocks tick on) and the message line (what the app
    says while it is open) around what `compose_dialog` yields."""

    _answered = False

    def compose(self) -> ComposeResult:
        yield DialogStatusBar()
        yield from self.compose_dialog()
        yield MessageLine()

    def compose_dialog(self) -> ComposeResult:
        yield from ()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """A DialogInput's Enter (dialogs with a field answer it)."""

    # Keys act here, in the order they were typed. A binding acts only when its key comes
    # back up to the app, after the keys typed after it were handed out: `tab enter` typed
    # fast pressed Cancel (the focus moved after enter had gone to it).
    CYCLE_KEYS: dict[str, int] = {}  # key -> step through the buttons (ConfirmDialog: tab ←→)

    def on_key(self, event: events.Key) -> None:
        if self._answered:  # typed ahead into a dialog that is closing: dropped, never below it
            event.stop()
            event.prevent_default()
            return
        focused = self.focused
        if event.key in self.CYCLE_KEYS:
            event.stop()
            event.prevent_default()
            self.action_cycle(self.CYCLE_KEYS[event.key])
        elif event.key in ("tab", "shift+tab"):  # the app's focus keys, but now, not after what follows
            event.stop()
            event.prevent_default()
            if event.key == "tab":
                self.focus_next()
            else:
                self.focus_previous()
        elif event.key in ("enter", "space") and isinstance(focused, Button):
            event.stop()
            event.prevent_default()
            self.on_button_pressed(Button.Pressed(focused))  # the button focused now, not when it was typed

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Dialogs with buttons answer here."""

    def action_cycle(self, step: int) -> None:
        buttons = list(self.query(Button))
        focused = self.focused
        index = buttons.index(focused) if focused in buttons else -step
        self.set_focus(buttons[(index + step) % len(buttons)])  # at once, for the next key

    def close(self, result: Any) -> None:
        if self._answered:
            return
        self._answered = True
        stack = self.app.screen_stack
        below = stack[-2] if len(stack) > 1 and stack[-1] is self else None
        # Keys typed right after this answer, before the screen below (or the next dialog of
        # a chain) is up, are typed ahead: dropped, never run on the screen below (rule 6).
        settling = getattr(below, "dialog_closing", None)
        if settling is not None:
            settling()
        self.dismiss(result)


class DialogInput(Input):
    """A dialog's text field. Enter answers at once, in the order of the keys (a binding
    would act after the characters typed after it, so `v2.15.0⏎trial` became one
    version); keys that reach it once its dialog has answered are dropped."""

    async def _on_key(self, event: events.Key) -> None:
        screen = self.screen
        if isinstance(screen, Dialog) and screen._answered:
            event.stop()
            event.prevent_default()
            return
        if event.key in ("tab", "shift+tab") and isinstance(screen, Dialog):
            # Moved now, by the dialog: a bubbling key reaches it only after this field has
            # handled the keys queued behind it (tab ⏎ submitted the field, then moved).
            Dialog.on_key(screen, event)  # the dialog's own handling (a subclass may add to on_key)
            return
        if event.key == "enter" and isinstance(screen, Dialog):
            event.stop()
            event.prevent_default()
            if screen.focused is not self:  # handed here before a tab moved the focus on: the button's
                Dialog.on_key(screen, event)
                return
            # Answered now, not by a message that would queue behind the keys typed after it.
            screen.on_input_submitted(self.Submitted(self, self.value))
            return
        await super()._on_key(event)


class ConfirmDialog(Dialog):
    """Yes / no with the action spelled out. Cancel has the focus unless `default` is
    "confirm" (used only for harmless choices such as resuming).

    Focus stays on the two buttons: tab, shift+tab, ← and → move between them (the body
    never takes the focus, so enter always presses a button); ↑↓ pgup pgdn scroll a long
    body; esc is the cancel button's answer. `cancel_label` names that answer when it is
    not plain "Cancel" (e.g. "New session"); `hint` replaces the key line under the body."""

    DEFAULT_CSS = DIALOG_CSS.replace("{name}", "ConfirmDialog")
    CYCLE_KEYS = {"tab": 1, "right": 1, "shift+tab": -1, "left": -1}
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
        Binding("tab,right", "cycle(1)", "Next button", show=False, id="dialog.next"),
        Binding("shift+tab,left", "cycle(-1)", "Previous button", show=False, id="dialog.previous"),
        Binding("up", "scroll_body(-1)", "Scroll up", show=False),
        Binding("down", "scroll_body(1)", "Scroll down", show=False),
        Binding("pageup", "scroll_body(-8)", "Page up", show=False),
        Binding("pagedown", "scroll_body(8)", "Page down", show=False),
    ]

    def __init__(self, title: str | Text, body: str | Text = "", *, confirm_label: str = "Confirm",
                 default: str = "cancel", cancel_label: str = "Cancel", hint: str | Text | None = None) -> None:
        super().__init__()
        self.title_text = _text(title)
        self.body = _text(body)
        self.confirm_label = confirm_label
        self.cancel_label = cancel_label
        self.default = default
        self.hint = _text(hint) if hint is not None else Text(
            f"tab ←→ switch buttons · enter presses the highlighted one · esc = {cancel_label}")

    def compose_dialog(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="dialog-title")
            body = VerticalScroll(classes="dialog-body", id="body")
            body.can_focus = False
            with body:
                yield Static(self.body)
            yield Label(self.hint, classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.cancel_label, id="cancel")
                yield Button(self.confirm_label, id="confirm", variant="warning")

    def on_mount(self) -> None:
        # At once, not later (Widget.focus defers): a tab typed right after the dialog opened
        # must move from here, not be undone by a focus arriving after it.
        self.set_focus(self.query_one("#confirm" if self.default == "confirm" else "#cancel", Button))

    def action_scroll_body(self, lines: int) -> None:
        self.query_one("#body", VerticalScroll).scroll_relative(y=lines, animate=False)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.close(event.button.id == "confirm")

    def action_cancel(self) -> None:
        self.close(False)


class _TypedAhead:
    """Rule 6: characters typed while the dialog opens, before its input has focus, go into
    that input, in order: `v2.15.0` typed right after `s` is not cut to `2.15.0`."""

    INPUT_ID = ""

    def on_key(self, event: events.Key) -> None:
        # A printable key reaches the dialog itself only when it was dispatched before the
        # input had focus (the input keeps the ones it gets); a button's letters stay out.
        screen: Any = self
        if not event.is_printable or not event.character:
            return
        field = screen.query_one(f"#{self.INPUT_ID}", Input)
        if screen.focused is not None and screen.focused is not field:
            return
        field.select_on_focus = False  # the focus arriving now must not select (and so replace) it
        field.focus()
        field.insert_text_at_cursor(event.character)
        event.stop()
        event.prevent_default()


class ReasonDialog(_TypedAhead, Dialog):
    """The operator must type a reason (at least `min_length` characters) to go on. Also used
    to ask for a value (the version) with `initial` filled in."""

    DEFAULT_CSS = DIALOG_CSS.replace("{name}", "ReasonDialog")
    INPUT_ID = "reason"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str | Text, body: str | Text = "", *, placeholder: str = "type the reason",
                 confirm_label: str = "OK", min_length: int = 3, initial: str = "") -> None:
        super().__init__()
        self.title_text = _text(title)
        self.body = _text(body)
        self.placeholder = placeholder
        self.confirm_label = confirm_label
        self.min_length = min_length
        self.initial = initial

    def compose_dialog(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(self.body)
            yield DialogInput(value=self.initial, placeholder=self.placeholder, id="reason")
            yield Static("", classes="dialog-error", id="error")
            yield Label("enter confirms · esc cancels", classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.confirm_label, id="confirm", variant="warning")

    def on_mount(self) -> None:
        self.set_focus(self.query_one("#reason", Input))  # at once: see ConfirmDialog.on_mount

    def _submit(self) -> None:
        value = self.query_one("#reason", Input).value.strip()
        if len(value) < self.min_length:
            self.query_one("#error", Static).update(
                Text(f"type at least {self.min_length} characters" if self.min_length > 1 else "type a value"))
            self.query_one("#reason", Input).focus()
            return
        self.close(value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "confirm":
            self._submit()
        else:
            self.close(None)

    def action_cancel(self) -> None:
        self.close(None)


class TypedConfirmDialog(_TypedAhead, Dialog):
    """Destructive actions: the operator types `word` (a provider or a tag name) exactly;
    until then Confirm does nothing."""

    DEFAULT_CSS = DIALOG_CSS.replace("{name}", "TypedConfirmDialog")
    INPUT_ID = "word"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str | Text, body: str | Text, word: str, *, confirm_label: str = "Confirm") -> None:
        super().__init__()
        self.title_text = _text(title)
        self.body = _text(body)
        self.word = word
        self.confirm_label = confirm_label

    def compose_dialog(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(self.body)
            yield Static(Text.assemble("Type ", (self.word, "bold"), " exactly, then enter, to confirm (esc cancels):"))
            yield DialogInput(placeholder="type it here", id="word")
            yield Static("", classes="dialog-error", id="error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.confirm_label, id="confirm", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.set_focus(self.query_one("#word", Input))  # at once: see ConfirmDialog.on_mount

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = event.value != self.word

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value == self.word:
            self.close(True)
        else:
            self.query_one("#error", Static).update(Text(f"that is not {self.word!r}; esc cancels"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.close(event.button.id == "confirm" and self.query_one("#word", Input).value == self.word)

    def action_cancel(self) -> None:
        self.close(False)


class PickDialog(Dialog):
    """Pick one of a few values (the provider a rollback disables) from a list: ↑↓ and enter;
    esc cancels. `choices` are (value, label); `initial` is highlighted first."""

    DEFAULT_CSS = DIALOG_CSS.replace("{name}", "PickDialog") + """
    PickDialog OptionList { height: auto; max-height: 10; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str | Text, body: str | Text, choices: list[tuple[str, str | Text]],
                 *, initial: str = "") -> None:
        super().__init__()
        self.title_text = _text(title)
        self.body = _text(body)
        self.choices = choices
        self.initial = initial

    def compose_dialog(self) -> ComposeResult:
        from textual.widgets import OptionList
        from textual.widgets.option_list import Option

        with Vertical():
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body")
            yield OptionList(*(Option(_text(label), id=value) for value, label in self.choices), id="choices")
            yield Label("↑↓ moves · enter picks · esc cancels", classes="dialog-hint")

    def on_mount(self) -> None:
        from textual.widgets import OptionList

        options = self.query_one("#choices", OptionList)
        values = [value for value, _ in self.choices]
        options.highlighted = values.index(self.initial) if self.initial in values else 0
        self.set_focus(options)  # at once: see ConfirmDialog.on_mount

    def on_option_list_option_selected(self, event: Any) -> None:
        event.stop()
        self.close(event.option.id)

    def action_cancel(self) -> None:
        self.close(None)
