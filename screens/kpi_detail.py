"""One KPI in detail: its last hour plotted (readings over time, the green and red thresholds
as lines, the deployment's start and finish and the rollback's start as marks), and the same
in words — the value, the thresholds, the age of the last reading, how much history shows.

The history is the app's (every reading polled since start); for a Prometheus KPI the app
also reads the whole hour once with query_range, in a worker with a deadline. This screen
does no I/O: it asks (LoadKpiHistory) and draws what it is given."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Label

from controlroom.config.models import Kpi
from controlroom.live.history import KpiHistory
from controlroom.live.polling import PollState, format_age
from controlroom.live.sources import KpiReading, plain
from controlroom.screens.base import ControlScreen
from controlroom.widgets.changes import set_content
from controlroom.widgets.freshness import append_freshness
from controlroom.widgets.kpi_row import SYMBOLS, format_value
from controlroom.widgets.messages import KpiHistoryLoaded, LoadKpiHistory

REDRAW_S = 15.0  # the time axis moves: redrawn this often without a new reading


def wall_clock() -> float:
    """Wall-clock seconds, as KpiReading.read_at is (the snapshot tests freeze it)."""
    return time.time()


class KpiDetailScreen(ControlScreen):
    TITLE_TEXT = "KPI"
    HELP = (
        "One KPI's last hour: its readings over time (x: minutes before now), its green and red "
        "thresholds as lines, and the deployment's start and finish (and a rollback's start) as "
        "vertical marks. A Prometheus KPI shows the whole hour (read once with query_range); an "
        "SQL KPI shows what was polled since the control room started. esc goes back."
    )
    BINDINGS = [Binding("escape", "close", "back", tooltip="Back to the KPI list", id="kpi_detail.close")]

    def __init__(self, kpi: Kpi, *, wall: Any = None) -> None:
        super().__init__()
        self.TITLE_TEXT = f"KPI {plain(kpi.title, limit=40)}"
        self.kpi = kpi
        self.wall = wall or wall_clock
        self.history_note = "reading the last hour…"
        self._drawn_at: float | None = None

    def compose_body(self) -> ComposeResult:
        # plotext and its widget (~22 ms) load when an operator first opens a KPI, not at start-up.
        from controlroom.widgets.kpi_plot import KpiPlot

        yield Label("", id="kpi-detail-summary")
        yield KpiPlot(self.kpi, id="kpi-plot")
        yield Label("", id="kpi-detail-history")

    def on_mount(self) -> None:
        super().on_mount()
        message = LoadKpiHistory(self.kpi.id)
        message.origin = self
        self.post_message(message)
        self.redraw()

    def action_close(self) -> None:
        self.dismiss()

    @property
    def history(self) -> KpiHistory:
        return self.room.kpi_history.get(self.kpi.id) or KpiHistory()

    def on_kpi_history_loaded(self, event: KpiHistoryLoaded) -> None:
        if event.kpi_id != self.kpi.id:
            return
        if event.error:
            self.history_note = f"the hour could not be read ({plain(event.error, limit=120)}): polled readings only"
        elif event.kept:
            self.history_note = "the hour from Prometheus, then each poll"
        else:
            self.history_note = "polled since the control room started (an SQL source keeps no history)"
        self.redraw()

    def show_state(self, source: str, state: PollState[Any]) -> None:
        if source == f"kpi:{self.kpi.id}":
            self.redraw()

    def tick(self, now: float) -> None:
        self._summary()
        if self._drawn_at is None or self.wall() - self._drawn_at >= REDRAW_S:
            self.redraw()

    def marks(self) -> list[tuple[str, float]]:
        session = self.session
        return [(label, at.timestamp()) for label, at in session.release_marks()] if session is not None else []

    def _built(self) -> bool:
        """Its widgets are there: not yet composed right after the push, gone while the app
        closes — a tick or a poll then has nothing to draw on."""
        return self.is_mounted and bool(self.query("#kpi-detail-summary")) and bool(self.query("#kpi-plot")) \
            and bool(self.query("#kpi-detail-history"))

    def redraw(self) -> None:
        if not self._built():
            return
        now = self.wall()
        self._drawn_at = now
        points = self.history.points(now)
        from controlroom.widgets.kpi_plot import KpiPlot

        plot = self.query_one("#kpi-plot", KpiPlot)
        plot.draw(points, self.marks(), now)
        count = len(plot.drawn.xs)
        span = f", the oldest {format_age(-plot.drawn.xs[0] * 60)} ago" if count else ""
        marks = ", ".join(f"{label} {format_age(-minutes * 60)} ago" for label, minutes in plot.drawn.marks.items())
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{count} reading{'s' if count != 1 else ''}{span} · {self.history_note}", style="dim")
        if marks:
            text.append(f"\nmarks: {marks}")
        set_content(self.query_one("#kpi-detail-history", Label), text)
        self._summary()

    def _summary(self) -> None:
        kpi = self.kpi
        state = self.room.poll_states.get(f"kpi:{kpi.id}")
        reading = state.value if state is not None and isinstance(state.value, KpiReading) else None
        text = Text(overflow="ellipsis")
        text.append(plain(kpi.title, limit=50), style="bold")
        if reading is None:
            text.append("  no reading yet", style="dim")
        else:
            text.append(f"  {SYMBOLS[reading.colour]} {format_value(reading.value, kpi.unit)}",
                        style={"green": "bold green", "amber": "bold yellow", "red": "bold red"}.get(reading.colour, "dim"))
        unit = kpi.unit if kpi.unit == "%" else f" {kpi.unit}" if kpi.unit else ""
        text.append(f"  green {kpi.green}{unit}", style="green")
        text.append(f"  red {kpi.red}{unit}", style="red")
        if state is not None:
            append_freshness(text, state, self.room.clock(), lead="  ", error_lead="\n")
        if self._built():
            set_content(self.query_one("#kpi-detail-summary", Label), text)
