"""Breakers: every location's circuit breaker; open and half-open first."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.actions import SkipAction
from textual.binding import Binding
from textual.widgets import Input, Label

from controlroom.live.polling import PollState, format_age
from controlroom.screens.base import ControlScreen
from controlroom.live.sources import BreakerSnapshot, plain
from controlroom.widgets.breaker_table import SORTS, BreakerTable, Shown
from controlroom.widgets.changes import set_content


class BreakersScreen(ControlScreen):
    TITLE_TEXT = "Breakers"
    HELP = (
        "Circuit breakers per location: provider, location, state, failures / threshold, window, "
        "since when. Open and half-open always come first; every location is listed (up / down, "
        "page up / page down, home / end move the cursor; it stays on its location when a poll "
        "re-orders the list). s cycles the sort; / filters by provider, location name or id, or "
        "state (enter keeps the filter, esc clears it)."
    )
    AUTO_FOCUS = "#breaker-table"
    BINDINGS = [
        Binding("slash", "filter", "filter", tooltip="Filter by provider, location or state", id="breakers.filter"),
        Binding("s", "cycle_sort", "sort", tooltip="Cycle the sort column", id="breakers.sort"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="breakers.clear"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.sort_by = "state"
        self.snapshot: BreakerSnapshot | None = None
        self.state: PollState[BreakerSnapshot] | None = None
        self.last_refresh_s: float | None = None
        self._view: Shown | None = None
        self._summarised: BreakerSnapshot | None = None

    def compose_body(self) -> ComposeResult:
        yield Label("waiting for the first reading…", id="breaker-summary")
        yield Input(placeholder="filter: provider, location, id or state — enter to apply, esc to clear",
                    id="breaker-filter", disabled=True)
        yield BreakerTable(id="breaker-table")
        yield Label("", id="breaker-status")

    def action_filter(self) -> None:
        field = self.query_one("#breaker-filter", Input)
        field.display = True
        field.disabled = False
        field.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#breaker-filter", Input)
        if not field.display and not self.filter_text:
            raise SkipAction()  # no filter to clear: esc goes on to the app's (back)
        field.value = ""
        field.display = False
        field.disabled = True
        self.filter_text = ""
        self.query_one(BreakerTable).focus()
        self.render_view()

    def action_cycle_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]
        self.render_view()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.render_view()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.input.display = bool(event.value)
        event.input.disabled = True
        self.query_one(BreakerTable).focus()

    def on_key(self, event: Any) -> None:
        field = self.query_one("#breaker-filter", Input)
        if event.key == "escape" and field.has_focus:
            event.stop()
            self.action_clear_filter()

    def show_state(self, source: str, state: PollState[Any]) -> None:
        if source != "breakers":
            return
        if state.value is not None and not isinstance(state.value, BreakerSnapshot):
            return  # the counts polled while this view was not shown: its rows come with the next poll
        self.state = state
        if state.value is not None and state.value is not self.snapshot:
            self.snapshot = state.value
            self.render_view()
        self.tick(self.room.clock())

    def render_view(self) -> None:
        snapshot = self.snapshot
        if snapshot is None:
            return
        import time

        began = time.perf_counter()
        self._view = self.query_one(BreakerTable).show(snapshot.rows, datetime.now(timezone.utc),
                                                       filter_text=self.filter_text, sort=self.sort_by)
        self.last_refresh_s = time.perf_counter() - began
        if snapshot is not self._summarised:
            self._summarised = snapshot
            self._render_summary(snapshot)
        self._render_status()

    def _render_summary(self, snapshot: BreakerSnapshot) -> None:
        counts = snapshot.counts()
        opened = sum(c["open"] for c in counts.values())
        half = sum(c["half_open"] for c in counts.values())
        summary = Text(no_wrap=True, overflow="ellipsis")
        summary.append(f" {opened} open ", style="bold white on red" if opened else "green")
        summary.append(" ")
        summary.append(f" {half} half-open ", style="bold black on yellow" if half else "green")
        summary.append(f"  of {len(snapshot.rows):,}  ")
        for provider, per in counts.items():
            bad = per["open"] + per["half_open"]
            summary.append(f"{provider} {bad}  ", style="bold red" if bad else "")
        set_content(self.query_one("#breaker-summary", Label), summary)

    def _render_status(self) -> None:
        view = self._view
        status = Text(no_wrap=True, overflow="ellipsis")
        if view is not None:
            matching = " matching" if self.filter_text.strip() else ""
            status.append(f"{view.matched:,}{matching} of {view.total:,} · sort {self.sort_by}")
            if self.filter_text:
                status.append(" · filter: ")
                status.append(self.filter_text[:20])
        state = self.state
        if state is not None:
            now = self.room.clock()
            status.append(f" · read {format_age(state.age(now))} ago")
            if state.stale(now):
                status.append(" STALE", style="bold yellow")
            if state.error:
                status.append(f" · {plain(state.error, limit=120)}", style="yellow")
        set_content(self.query_one("#breaker-status", Label), status)

    def tick(self, now: float) -> None:
        self._render_status()
