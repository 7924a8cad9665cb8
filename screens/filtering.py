"""`/` filters a screen's table or list, the same way on every screen (k9s' convention):
`/` opens the filter line, typing filters at once, enter keeps the filter (the line stays,
showing it) and gives the keys back to the table, esc clears it. While a filter is kept,
the screen's status says "N matching of M".

A screen mixes in `Filtering`, yields `filter_line()` where the line goes, lists
`filter_bindings(scope, what)` in its BINDINGS (ids `<scope>.filter` and `<scope>.clear`:
the key reference and a user's keymap name them), and implements `apply_filter()` (show the
rows matching `filter_needle`) and `filter_focus()` (the widget the keys go back to).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Input, Label

FILTER_ID = "filter-line"
STATUS_ID = "filter-status"


def filter_bindings(scope: str, what: str, *, show: bool = True) -> list[Binding]:
    """`/` and esc for a screen (`show=False`: not on the key bar, where a screen's own keys
    already take the 80 columns; `?` lists it)."""
    return [
        Binding("slash", "filter", "filter", show=show, tooltip=f"Filter by {what}", id=f"{scope}.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id=f"{scope}.clear"),
    ]


def filter_line(placeholder: str) -> Input:
    field = Input(placeholder=f"filter: {placeholder} — enter to apply, esc to clear", id=FILTER_ID, disabled=True,
                  classes="filter-line")
    field.display = False
    return field


def filter_line_with_status(placeholder: str) -> ComposeResult:
    """The filter line and, under it, its "N matching of M" (both shown only while filtering)."""
    yield filter_line(placeholder)
    status = Label("", id=STATUS_ID, classes="filter-status")
    status.display = False
    yield status


def grouped_matches(groups: Iterable[tuple[str | None, str, Iterable[tuple[str, str]]]],
                    needle: str) -> tuple[set[str] | None, int, int]:
    """Which rows a filter shows, for a table of headings and their rows.

    `groups`: (heading row key or None, heading text, [(row key, the row's searchable text)]).
    A row shows when the needle is in its text (or its heading's); a heading shows when any
    of its rows does. Answers (keys to show, None for every row; rows matching; rows)."""
    shown: set[str] = set()
    matched = total = 0
    for heading, heading_text, rows in groups:
        whole = bool(needle) and needle in heading_text.lower()
        for key, text in rows:
            total += 1
            if not needle or whole or needle in text.lower():
                matched += 1
                shown.add(key)
                if heading is not None:
                    shown.add(heading)
    return (None if not needle else shown), matched, total


def matching_status(matched: int, total: int, needle: str, noun: str = "") -> str:
    """'N matching of M' while a filter is kept; 'M of M' without one."""
    noun = f" {noun}" if noun else ""
    if not needle:
        return f"{matched:,} of {total:,}{noun}"
    return f"{matched:,} matching of {total:,}{noun} · filter: {needle[:20]}"


class Filtering:
    """The `/` behaviour; see the module's words. Mixed into a ControlScreen."""

    FILTER_INPUT = f"#{FILTER_ID}"
    filter_text = ""

    @property
    def filter_needle(self) -> str:
        """What rows are matched against: the filter, stripped, lower case."""
        return self.filter_text.strip().lower()

    def apply_filter(self) -> None:
        raise NotImplementedError

    def filter_focus(self) -> Widget | None:
        return None

    def show_matching(self, matched: int, total: int, noun: str = "") -> None:
        """The "N matching of M" line under the filter (shown while a filter is kept)."""
        status = self.query(f"#{STATUS_ID}").first(Label)  # type: ignore[attr-defined]
        needle = self.filter_text.strip()
        status.display = bool(needle)
        status.update(matching_status(matched, total, needle, noun))

    def _filter_input(self) -> Input:
        return self.query_one(self.FILTER_INPUT, Input)  # type: ignore[attr-defined]

    def action_filter(self) -> None:
        field = self._filter_input()
        field.display = True
        field.disabled = False
        self.set_focus(field)  # type: ignore[attr-defined]  # now: the keys typed after `/` are the filter's

    def action_clear_filter(self) -> None:
        field = self._filter_input()
        field.value = ""
        field.display = False
        field.disabled = True
        self.filter_text = ""
        target = self.filter_focus()
        if target is not None:
            target.focus()
        self.apply_filter()

    def select_row(self, key: str) -> bool:
        """ControlScreen's, and a row that the kept filter hides is named on purpose (the `:`
        command line): the filter is cleared, so that the row is shown and the cursor on it."""
        if super().select_row(key):  # type: ignore[misc]
            return True
        if not self.filter_text:
            return False
        self.action_clear_filter()
        return super().select_row(key)  # type: ignore[misc]

    @property
    def filtering(self) -> bool:
        """A filter is kept or being typed: esc clears it (otherwise esc is free for "back")."""
        fields = self.query(self.FILTER_INPUT)  # type: ignore[attr-defined]
        return bool(self.filter_text) or any(field.has_focus for field in fields)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter" and not self.filtering:
            return False
        return super().check_action(action, parameters)  # type: ignore[misc]

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != FILTER_ID:
            return
        event.stop()
        self.filter_text = event.value
        self.apply_filter()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != FILTER_ID:
            return
        event.stop()
        event.input.display = bool(event.value)
        event.input.disabled = True
        target = self.filter_focus()
        if target is not None:
            target.focus()

    async def on_key(self, event: Any) -> None:
        field = self._filter_input()
        if self.focused is not field:  # type: ignore[attr-defined]  # (has_focus follows a message later)
            # The filter's key is acted on here, not as a binding: Textual runs a binding's
            # action after the keys typed with it have reached the table, and `/backup⏎`
            # typed in one burst would be the view's a, c, k, p keys.
            if field.display:  # a filter is kept: its key does nothing more
                return
            mine = next((bindings for node, bindings in self._binding_chain if node is self), None)  # type: ignore[attr-defined]  # the keymap applied
            keys = mine.key_to_bindings.get(event.key, ()) if mine is not None else ()
            if any(binding.action == "filter" for binding in keys):
                event.stop()
                event.prevent_default()
                self.action_filter()
            return
        if event.key == "escape":
            event.stop()
            self.action_clear_filter()
        elif event.is_printable or event.key == "enter":
            # `/backup⏎` typed in one burst: the keys after `/` went to the table before the
            # field had the focus, and come up here (the field stops what it takes itself);
            # they are the filter's, never the view's a, c, k, p.
            event.stop()
            event.prevent_default()
            if event.key == "enter":
                await field.action_submit()
            else:
                field.insert_text_at_cursor(event.character)
