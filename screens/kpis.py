"""KPIs: the runbook's real-time and 24-hour KPIs against their thresholds. ↑↓ select a KPI,
enter opens its detail (the last hour plotted), / filters the list."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Label

from controlroom.live.polling import PollState
from controlroom.widgets.kpi_row import KpiRow
from controlroom.screens.base import ControlScreen
from controlroom.screens.filtering import Filtering, filter_bindings, filter_line_with_status
from controlroom.screens.kpi_detail import KpiDetailScreen


class KpiList(VerticalScroll, can_focus=True):
    """The KPI rows; focusable, so ↑↓ and enter reach the screen's bindings."""


class KpisScreen(Filtering, ControlScreen):
    TITLE_TEXT = "KPIs"
    HELP = (
        "Each KPI with its value (✓ green, ! amber, ✗ red, ? unknown), its green (G) and red (R) "
        "thresholds, a sparkline of recent values and the age of the last reading. A source that "
        "fails keeps its last value; its age turns STALE and the error shows beneath it. ↑↓ select "
        "a KPI; enter opens its detail: the last hour plotted with its thresholds and the "
        "deployment's start and finish marked (esc comes back). / filters by title or id."
    )
    AUTO_FOCUS = "#kpi-list"
    BINDINGS = [
        Binding("down", "select(1)", "next", show=False, id="kpis.down"),
        Binding("up", "select(-1)", "previous", show=False, id="kpis.up"),
        Binding("enter", "detail", "detail", tooltip="The selected KPI's last hour, plotted", id="kpis.detail"),
        *filter_bindings("kpis", "title or id"),
    ]

    selected = 0  # index among the rows shown
    _rows: dict[str, KpiRow] | None = None

    def compose_body(self) -> ComposeResult:
        kpis = self.room.config.runbook.kpis
        yield from filter_line_with_status("title or id")
        with KpiList(id="kpi-list"):
            for window, heading in (("realtime", "Real-time"), ("24h", "24 hours")):
                chosen = [k for k in kpis if k.window == window]
                if chosen:
                    yield Label(heading, classes="section-title", id=f"kpi-heading-{window}")
                    for kpi in chosen:
                        yield KpiRow(kpi)
            if not kpis:
                yield Label("This runbook defines no KPIs.")

    def on_mount(self) -> None:
        super().on_mount()
        self._select(0)

    def kpi_rows(self) -> dict[str, KpiRow]:
        """The rows by KPI id, found once they are composed: the runbook's KPIs never change,
        and a CSS query of the whole view on every poll and every second was most of an idle
        KPI view's work."""
        if not self._rows:
            self._rows = {row.kpi.id: row for row in self.query(KpiRow)}
        return self._rows

    def shown_rows(self) -> list[KpiRow]:
        return [row for row in self.kpi_rows().values() if row.display]

    def selected_row(self) -> KpiRow | None:
        rows = self.shown_rows()
        return rows[min(self.selected, len(rows) - 1)] if rows else None

    def _select(self, index: int) -> None:
        rows = self.shown_rows()
        self.selected = max(0, min(index, len(rows) - 1))
        for number, row in enumerate(rows):
            row.set_class(number == self.selected, "-selected")
        if rows:
            self.query_one("#kpi-list").scroll_to_widget(rows[self.selected], animate=False)

    def action_select(self, step: int) -> None:
        self._select(self.selected + step)

    def action_detail(self) -> None:
        row = self.selected_row()
        if row is not None:
            self.app.push_screen(KpiDetailScreen(row.kpi))

    def filter_focus(self) -> KpiList:
        return self.query_one(KpiList)

    def apply_filter(self) -> None:
        needle = self.filter_needle
        rows = list(self.kpi_rows().values())
        for row in rows:
            row.display = not needle or needle in f"{row.kpi.id} {row.kpi.title}".lower()
        for window in ("realtime", "24h"):
            for heading in self.query(f"#kpi-heading-{window}"):
                heading.display = any(row.display for row in rows if row.kpi.window == window)
        self.show_matching(len(self.shown_rows()), len(rows), "KPIs")
        self._select(0)

    def show_state(self, source: str, state: PollState[Any]) -> None:
        if not source.startswith("kpi:"):
            return
        row = self.kpi_rows().get(source[4:])
        if row is not None:
            row.show(state, self.room.clock())

    def tick(self, now: float) -> None:
        for row in self.kpi_rows().values():
            row.tick(now)
