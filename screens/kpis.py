"""KPIs: the runbook's real-time and 24-hour KPIs against their thresholds."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Label

from controlroom.live.polling import PollState
from controlroom.widgets.kpi_row import KpiRow
from controlroom.screens.base import ControlScreen


class KpisScreen(ControlScreen):
    TITLE_TEXT = "KPIs"
    HELP = (
        "Each KPI with its value (✓ green, ! amber, ✗ red, ? unknown), its green (G) and red (R) "
        "thresholds, a sparkline of recent values and the age of the last reading. A source that "
        "fails keeps its last value; its age turns STALE and the error shows beneath it."
    )

    def compose_body(self) -> ComposeResult:
        kpis = self.room.config.runbook.kpis
        with VerticalScroll(id="kpi-list"):
            for window, heading in (("realtime", "Real-time"), ("24h", "24 hours")):
                chosen = [k for k in kpis if k.window == window]
                if chosen:
                    yield Label(heading, classes="section-title")
                    for kpi in chosen:
                        yield KpiRow(kpi)
            if not kpis:
                yield Label("This runbook defines no KPIs.")

    def show_state(self, source: str, state: PollState[Any]) -> None:
        if not source.startswith("kpi:"):
            return
        rows = self.query(f"#kpi-{source[4:]}")
        if rows:
            rows.first(KpiRow).show(state, self.room.clock())

    def tick(self, now: float) -> None:
        for row in self.query(KpiRow):
            row.tick(now)
