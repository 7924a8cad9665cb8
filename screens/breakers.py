"""Breakers: every location's circuit breaker; open and half-open first."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Label

from controlroom.live.polling import PollState
from controlroom.screens.base import ControlScreen
from controlroom.screens.filtering import Filtering, filter_bindings, filter_line, matching_status
from controlroom.live.sources import BreakerSnapshot
from controlroom.widgets.breaker_table import SORTS, BreakerTable, Shown
from controlroom.widgets.changes import set_content
from controlroom.widgets.freshness import append_freshness


class BreakersScreen(Filtering, ControlScreen):
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
        *filter_bindings("breakers", "provider, location or state"),
        Binding("s", "cycle_sort", "sort", tooltip="Cycle the sort column", id="breakers.sort"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_by = "state"
        self.snapshot: BreakerSnapshot | None = None
        self.state: PollState[BreakerSnapshot] | None = None
        self.last_refresh_s: float | None = None
        self._view: Shown | None = None
        self._summarised: BreakerSnapshot | None = None

    def compose_body(self) -> ComposeResult:
        yield Label("waiting for the first reading…", id="breaker-summary")
        yield filter_line("provider, location, id or state")
        yield BreakerTable(id="breaker-table")
        yield Label("", id="breaker-status")

    def filter_focus(self) -> BreakerTable:
        return self.query_one(BreakerTable)

    def apply_filter(self) -> None:
        self.render_view()

    def action_cycle_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]
        self.render_view()

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
            status.append(matching_status(view.matched, view.total, self.filter_text.strip()))
            status.append(f" · sort {self.sort_by}")
        state = self.state
        if state is not None:
            append_freshness(status, state, self.room.clock())
        set_content(self.query_one("#breaker-status", Label), status)

    def tick(self, now: float) -> None:
        self._render_status()
