"""POS health: per provider, the runbook's [views.health] query, live."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Label

from controlroom.widgets.row_table import RowTable
from controlroom.widgets.changes import set_content
from controlroom.widgets.freshness import append_freshness
from controlroom.config.models import HealthView, Threshold
from controlroom.live.polling import PollState
from controlroom.screens.base import ControlScreen
from controlroom.screens.filtering import Filtering, filter_bindings, filter_line_with_status, grouped_matches
from controlroom.live.sources import HealthSnapshot, ProviderHealth, plain

COLUMNS = (("provider", "Provider", 10), ("total", "Total", 7), ("connected", "Conn", 7),
           ("disconnected", "Disc", 6), ("failed", "Failing", 7), ("sync", "Sync 30m", 9), ("mttr", "MTTR", 10))


def _colour(value: float | None, green: Threshold | None, red: Threshold | None) -> str:
    """green / red by the view's thresholds, yellow between; no colour without them."""
    if value is None or (green is None and red is None):
        return ""
    if green is not None and green.holds(value):
        return "green"
    if red is not None and red.holds(value):
        return "bold red"
    return "yellow"


def health_cells(p: ProviderHealth, view: HealthView) -> tuple[Text, ...]:
    sync = "—" if p.sync_success_percent is None else f"{p.sync_success_percent:.1f}%"
    mttr = "—" if p.mttr_minutes is None else f"{p.mttr_minutes:.0f} min"
    failing = "—" if p.failing is None else f"{p.failing:,}"
    return (
        Text(plain(p.provider, limit=30), style="bold"),
        Text(f"{p.total:,}", justify="right"),
        Text(f"{p.connected:,}", justify="right"),
        Text(f"{p.disconnected:,}", justify="right", style="bold red" if p.disconnected else ""),
        Text(failing, justify="right", style="" if p.failing is None else "bold red" if p.failing else "green"),
        Text(sync, justify="right", style=_colour(p.sync_success_percent, view.sync_green, view.sync_red)),
        Text(mttr, justify="right", style=_colour(p.mttr_minutes, view.mttr_green, view.mttr_red)),
    )


class PosHealthScreen(Filtering, ControlScreen):
    TITLE_TEXT = "POS health"
    HELP = (
        "Per POS provider, from the runbook's [views.health] query: locations total, connected and "
        "disconnected, locations failing, sync success and MTTR, coloured by the view's thresholds. "
        "/ filters by provider (enter keeps the filter, esc clears it)."
    )
    BINDINGS = filter_bindings("pos", "provider")

    def __init__(self) -> None:
        super().__init__()
        self.state: PollState[HealthSnapshot] | None = None
        self._rows_shown: dict[str, tuple[str, ...]] = {}  # provider -> its cells as shown

    def compose_body(self) -> ComposeResult:
        table: DataTable[Text] = RowTable(cursor_type="none", id="health-table")  # nothing to select; a cursor would hide the colours
        yield from filter_line_with_status("provider")
        yield table
        yield Label("waiting for the first reading…", id="health-status")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one(DataTable)
        view = self.view
        for key, label, width in COLUMNS:
            if key == "failed" and view is not None:
                label = plain(view.failing_title, limit=12)
                width = max(width, len(label))
            table.add_column(Text(label), key=key, width=width)  # from the runbook: never markup

    @property
    def view(self) -> HealthView | None:
        return self.room.config.runbook.views.health

    @property
    def help_text(self) -> str:
        view = self.view
        return self.HELP + (" " + view.description if view is not None and view.description else "")

    def show_state(self, source: str, state: PollState[Any]) -> None:
        if source != "health":
            return
        previous = self.state
        self.state = state
        if state.value is not None and (previous is None or previous.value is not state.value):
            table = self.query_one(DataTable)
            with self.app.batch_update():
                view = self.view
                assert view is not None  # the screen is shown only when the runbook defines the view
                for p in state.value.providers:
                    row = health_cells(p, view)
                    plain_row = tuple(t.plain + str(t.style) for t in row)
                    if p.provider not in self._rows_shown:
                        table.add_row(*row, key=p.provider)
                    elif self._rows_shown[p.provider] != plain_row:
                        for (key, _, _), cell in zip(COLUMNS, row):
                            table.update_cell(p.provider, key, cell)
                    self._rows_shown[p.provider] = plain_row
            if self.filter_needle:
                self.apply_filter()  # a provider new since the filter was typed
        self.tick(self.room.clock())

    def filter_focus(self) -> RowTable:
        return self.query_one("#health-table", RowTable)

    def apply_filter(self) -> None:
        shown, matched, total = grouped_matches([(None, "", [(p, p) for p in self._rows_shown])], self.filter_needle)
        self.filter_focus().show_only(shown)
        self.show_matching(matched, total, "providers")

    def tick(self, now: float) -> None:
        state = self.state
        if state is None:
            return
        status = append_freshness(Text(no_wrap=True, overflow="ellipsis"), state, now, lead="")
        set_content(self.query_one("#health-status", Label), status)
